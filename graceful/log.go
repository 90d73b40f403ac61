package graceful

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
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

// Logger is all three; a ResponseWriter is one, writing to the Server's
// Logger.
type Logger interface {
	DebugLogger
	InfoLogger
	ErrorLogger
}

// NewSlogLogger returns a *slog.Logger for the Logger fields of Client and
// Server that writes to l: a value with some of the methods Debugf, Infof
// and Errorf (a DebugLogger, InfoLogger, ErrorLogger or Logger, as many
// logging libraries offer). Each record is one call, with the format
// "message key=%v ..." and the attribute values (errors stay errors) as
// its arguments. Debug records go to Debugf, Info to Infof, Warn and Error
// to Errorf; levels l lacks are dropped. A nil l gives nil: no logging.
func NewSlogLogger(l any) *slog.Logger {
	if l == nil {
		return nil
	}
	return slog.New(&printfHandler{to: l})
}

// printfHandler is NewSlogLogger's slog.Handler.
type printfHandler struct {
	to     any
	attrs  []slog.Attr
	prefix string // groups, "a.b."
}

func (h *printfHandler) Enabled(_ context.Context, level slog.Level) bool {
	_, ok := h.sink(level)
	return ok
}

func (h *printfHandler) sink(level slog.Level) (func(string, ...any), bool) {
	switch {
	case level >= slog.LevelWarn:
		if l, ok := h.to.(ErrorLogger); ok {
			return l.Errorf, true
		}
	case level >= slog.LevelInfo:
		if l, ok := h.to.(InfoLogger); ok {
			return l.Infof, true
		}
	default:
		if l, ok := h.to.(DebugLogger); ok {
			return l.Debugf, true
		}
	}
	return nil, false
}

func (h *printfHandler) Handle(_ context.Context, r slog.Record) error {
	out, ok := h.sink(r.Level)
	if !ok {
		return nil
	}
	var format strings.Builder
	format.WriteString(strings.ReplaceAll(r.Message, "%", "%%"))
	args := make([]any, 0, len(h.attrs)+r.NumAttrs())
	add := func(prefix string, a slog.Attr) {
		fmt.Fprintf(&format, " %s=%%v", strings.ReplaceAll(prefix+a.Key, "%", "%%"))
		args = append(args, a.Value.Resolve().Any())
	}
	for _, a := range h.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool { add(h.prefix, a); return true })
	out(format.String(), args...)
	return nil
}

func (h *printfHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(c.attrs[:len(c.attrs):len(c.attrs)], attrs...)
	if h.prefix != "" {
		for i := len(h.attrs); i < len(c.attrs); i++ {
			c.attrs[i].Key = h.prefix + c.attrs[i].Key
		}
	}
	return &c
}

func (h *printfHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix += name + "."
	return &c
}

// logger is what the library logs through: a Client's or Server's Logger,
// nil for none.
type logger struct{ l *slog.Logger }

func (l logger) Debugf(format string, args ...any) { l.printf(slog.LevelDebug, format, args) }
func (l logger) Infof(format string, args ...any)  { l.printf(slog.LevelInfo, format, args) }
func (l logger) Errorf(format string, args ...any) { l.printf(slog.LevelError, format, args) }

func (l logger) printf(level slog.Level, format string, args []any) {
	if l.enabled(level) {
		l.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (l logger) enabled(level slog.Level) bool {
	return l.l != nil && l.l.Enabled(context.Background(), level)
}

// log writes msg with attributes, as key-value pairs.
func (l logger) log(level slog.Level, msg string, args ...any) {
	if l.enabled(level) {
		l.l.Log(context.Background(), level, msg, args...)
	}
}

// floodInterval is the least time between two lines of a floodLog.
const floodInterval = time.Second

// floodLog keeps a flood of failed connections (refused peers, peers that
// never said HELLO) from writing a line each: it writes at most one line a
// second, which counts the failures it did not write since the previous
// one, and the count left at the end (flush).
type floodLog struct {
	mu      sync.Mutex
	next    time.Time // no line before then
	skipped int
}

// note logs msg at error level, or counts it when a line was written less
// than floodInterval ago.
func (f *floodLog) note(l logger, msg string, args ...any) {
	if !l.enabled(slog.LevelError) {
		return
	}
	f.mu.Lock()
	now := time.Now()
	if now.Before(f.next) {
		f.skipped++
		f.mu.Unlock()
		return
	}
	skipped := f.skipped
	f.skipped, f.next = 0, now.Add(floodInterval)
	f.mu.Unlock()
	if skipped > 0 {
		args = append(args, "unlogged", skipped)
	}
	l.log(slog.LevelError, msg, args...)
}

// flush logs the count of failures not written yet.
func (f *floodLog) flush(l logger) {
	f.mu.Lock()
	skipped := f.skipped
	f.skipped = 0
	f.mu.Unlock()
	if skipped > 0 {
		l.log(slog.LevelError, "graceful: more connections failed before their HELLO", "unlogged", skipped)
	}
}
