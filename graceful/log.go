package graceful

import (
	"context"
	"fmt"
	"log/slog"
)

// DebugLogger receives debug messages.
type DebugLogger interface {
	Debugf(format string, args ...any)
}

// InfoLogger receives informational messages.
type InfoLogger interface {
	Infof(format string, args ...any)
}

// ErrorLogger receives error messages.
type ErrorLogger interface {
	Errorf(format string, args ...any)
}

// Logger is all three. The Logger fields of Client and Server take any
// value: a *slog.Logger, or anything implementing some of DebugLogger,
// InfoLogger and ErrorLogger. Levels it does not implement are dropped.
type Logger interface {
	DebugLogger
	InfoLogger
	ErrorLogger
}

// logger adapts whatever the user gave.
type logger struct{ to any }

func (l logger) Debugf(format string, args ...any) { l.log(slog.LevelDebug, format, args) }
func (l logger) Infof(format string, args ...any)  { l.log(slog.LevelInfo, format, args) }
func (l logger) Errorf(format string, args ...any) { l.log(slog.LevelError, format, args) }

func (l logger) log(level slog.Level, format string, args []any) {
	switch to := l.to.(type) {
	case nil:
	case *slog.Logger:
		if to.Enabled(context.Background(), level) {
			to.Log(context.Background(), level, fmt.Sprintf(format, args...))
		}
	default:
		switch level {
		case slog.LevelDebug:
			if d, ok := to.(DebugLogger); ok {
				d.Debugf(format, args...)
			}
		case slog.LevelInfo:
			if i, ok := to.(InfoLogger); ok {
				i.Infof(format, args...)
			}
		default:
			if e, ok := to.(ErrorLogger); ok {
				e.Errorf(format, args...)
			}
		}
	}
}
