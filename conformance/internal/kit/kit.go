// Package kit is the adapter side of the conformance contract
// (spec/adapter.md) for adapters written in Go: it reads requests, answers
// them, and runs challenges, so that an adapter only wraps its
// implementation's sender and receiver.
package kit

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Descriptor is one descriptor of a serve request.
type Descriptor struct {
	Fd      int
	Kind    string // raw, file, listener, stream, packet
	Meta    []byte // nil with HasMeta false: no metadata
	HasMeta bool
	KV      map[string]string // set when the suite asked for key-value metadata
}

// ServeRequest is a serve request, or a send request (feature dial).
type ServeRequest struct {
	Socket       string
	Descriptors  []Descriptor
	Timeout      time.Duration
	ReadyTimeout time.Duration
	// Authorize, when not nil, replaces the default credential check:
	// the peer's uid must be one of these (feature authorize).
	Authorize *[]int
	// SessionTimeout and MaxPending: 0 means the implementation's
	// defaults (feature limits).
	SessionTimeout time.Duration
	MaxPending     int
}

// ReceiveRequest is a receive request.
type ReceiveRequest struct {
	Socket  string
	Timeout time.Duration
	Ready   bool
	Reject  int // -1: refuse nothing
	KV      bool
	// Sessions on the one connection, 1 or more (feature sessions).
	Sessions int
	// Authorize as for ServeRequest (feature authorize).
	Authorize *[]int
	// SessionTimeout, MaxFds, MaxMetaBytes: 0 means the implementation's
	// defaults (feature limits).
	SessionTimeout time.Duration
	MaxFds         int
	MaxMetaBytes   int
}

// Received is a descriptor the implementation handed over.
type Received struct {
	Fd      int
	Kind    string // "" when the implementation does not say
	Meta    []byte
	HasMeta bool
	KV      map[string]string
	KVError string
}

// Outcome is how one connection to a sender ended.
type Outcome struct {
	Ready bool // READY read
	Err   error
}

// Impl is the implementation under test, seen from its adapter.
type Impl interface {
	// Serve starts serving and sends the outcome of every connection on
	// the returned channel.
	Serve(req ServeRequest) (<-chan Outcome, error)
	// Receive runs one receiver session. It returns what was handed over,
	// also when it fails.
	Receive(req ReceiveRequest) ([]Received, error)
	// Close stops serving and releases everything.
	Close() error
}

// Dialer is an Impl that offers feature dial: a sender that connects to a
// listening receiver and serves that one connection.
type Dialer interface {
	Send(req ServeRequest) Outcome
}

// Coder is an error that names its protocol error code. A Receive error
// whose code is "UNCONFIRMED" is answered ok, with confirmed false: the
// set was handed over whole (protocol ACK-3).
type Coder interface{ Code() string }

// Options are the adapter's self-description, and hooks for deliberately
// broken adapters.
type Options struct {
	Implementation string
	Features       []string
	// ExitWithoutDone makes exit end the process with status 0 without
	// answering done (a broken adapter the suite must catch).
	ExitWithoutDone bool
}

type request struct {
	Seq            int    `json:"seq"`
	Op             string `json:"op"`
	Contracts      []int  `json:"contracts"`
	Socket         string `json:"socket"`
	TimeoutMs      int    `json:"timeout_ms"`
	ReadyTimeoutMs int    `json:"ready_timeout_ms"`
	Descriptors    []struct {
		Fd   int               `json:"fd"`
		Kind string            `json:"kind"`
		Meta *string           `json:"meta"`
		KV   map[string]string `json:"kv"`
	} `json:"descriptors"`
	Ready  bool `json:"ready"`
	Reject *int `json:"reject"`
	KV     bool `json:"kv"`
	// Feature fields.
	Sessions  int `json:"sessions"`
	Authorize *struct {
		UIDs []int `json:"uids"`
	} `json:"authorize"`
	SessionTimeoutMs int    `json:"session_timeout_ms"`
	MaxPending       int    `json:"max_pending"`
	MaxFds           int    `json:"max_fds"`
	MaxMetaBytes     int    `json:"max_meta_bytes"`
	Index            int    `json:"index"`
	Action           string `json:"action"`
	Offset           int    `json:"offset"`
	Length           int    `json:"length"`
}

type errObj struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func errorOf(err error) *errObj {
	code := "OTHER"
	var c Coder
	if errors.As(err, &c) {
		code = c.Code()
	}
	return &errObj{Code: code, Message: err.Error()}
}

// Main runs the adapter loop on stdin and stdout and returns the exit
// status for os.Exit.
func Main(impl Impl, opts Options) int {
	return Loop(os.Stdin, os.Stdout, impl, opts)
}

// Loop runs the adapter loop and returns the exit status.
func Loop(in io.Reader, out io.Writer, impl Impl, opts Options) int {
	r := bufio.NewReaderSize(in, 1<<20)
	w := bufio.NewWriter(out)
	reply := func(v map[string]any) {
		b, _ := json.Marshal(v)
		w.Write(append(b, '\n'))
		w.Flush()
	}
	var (
		outcomes <-chan Outcome
		received []Received
	)
	defer impl.Close()
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, "adapter: stdin ended before exit")
			return 1
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			fmt.Fprintln(os.Stderr, "adapter: bad request:", err)
			return 2
		}
		resp := map[string]any{"seq": req.Seq, "ok": true}
		fail := func(err error) {
			resp["ok"] = false
			resp["error"] = errorOf(err)
		}
		timeout := time.Duration(req.TimeoutMs) * time.Millisecond
		switch req.Op {
		case "hello":
			if !contains(req.Contracts, 1) {
				fail(errors.New("contract 1 only"))
				reply(resp)
				return 3
			}
			resp["contract"] = 1
			resp["implementation"] = opts.Implementation
			resp["pid"] = os.Getpid()
			resp["features"] = append([]string{}, opts.Features...)
		case "serve", "send":
			sr := ServeRequest{Socket: req.Socket, Timeout: timeout,
				ReadyTimeout:   time.Duration(req.ReadyTimeoutMs) * time.Millisecond,
				SessionTimeout: time.Duration(req.SessionTimeoutMs) * time.Millisecond,
				MaxPending:     req.MaxPending}
			if req.Authorize != nil {
				uids := append([]int{}, req.Authorize.UIDs...)
				sr.Authorize = &uids
			}
			for _, d := range req.Descriptors {
				desc := Descriptor{Fd: d.Fd, Kind: d.Kind, KV: d.KV}
				if d.Meta != nil {
					desc.Meta, err = base64.StdEncoding.DecodeString(*d.Meta)
					if err != nil {
						fmt.Fprintln(os.Stderr, "adapter: bad base64:", err)
						return 2
					}
					desc.HasMeta = true
				}
				sr.Descriptors = append(sr.Descriptors, desc)
			}
			if req.Op == "send" {
				d, ok := impl.(Dialer)
				if !ok {
					fmt.Fprintln(os.Stderr, "adapter: send without feature dial")
					return 2
				}
				answer(resp, d.Send(sr), fail)
				break
			}
			outcomes, err = impl.Serve(sr)
			if err != nil {
				fail(err)
			}
		case "result":
			if outcomes == nil {
				fail(errors.New("result before serve"))
				break
			}
			o, ok := <-outcomes
			if !ok {
				fail(errors.New("the server stopped"))
				break
			}
			answer(resp, o, fail)
		case "receive":
			rr := ReceiveRequest{Socket: req.Socket, Timeout: timeout, Ready: req.Ready, Reject: -1, KV: req.KV,
				Sessions: max(req.Sessions, 1), MaxFds: req.MaxFds, MaxMetaBytes: req.MaxMetaBytes,
				SessionTimeout: time.Duration(req.SessionTimeoutMs) * time.Millisecond}
			if req.Reject != nil {
				rr.Reject = *req.Reject
			}
			if req.Authorize != nil {
				uids := append([]int{}, req.Authorize.UIDs...)
				rr.Authorize = &uids
			}
			received, err = impl.Receive(rr)
			var c Coder
			switch {
			case errors.As(err, &c) && c.Code() == "UNCONFIRMED":
				resp["confirmed"] = false
			case err != nil:
				fail(err)
			}
			resp["descriptors"] = describe(received, req.KV)
		case "challenge":
			if req.Index < 0 || req.Index >= len(received) {
				fail(fmt.Errorf("no descriptor %d", req.Index))
				break
			}
			data, err := Challenge(received[req.Index].Fd, req.Action, req.Offset, req.Length, timeout)
			if err != nil {
				fail(err)
				break
			}
			resp["data"] = base64.StdEncoding.EncodeToString(data)
		case "exit":
			if err := impl.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "adapter: close:", err)
			}
			for _, d := range received {
				unix.Close(d.Fd)
			}
			if opts.ExitWithoutDone {
				return 0
			}
			resp["done"] = true
			reply(resp)
			return 0
		default:
			fmt.Fprintln(os.Stderr, "adapter: unknown op", req.Op)
			return 2
		}
		reply(resp)
	}
}

// answer fills the response to result or send with how a connection ended.
func answer(resp map[string]any, o Outcome, fail func(error)) {
	switch {
	case o.Err != nil:
		fail(o.Err)
	case o.Ready:
		resp["outcome"] = "ready"
	default:
		resp["outcome"] = "acked"
	}
}

func describe(received []Received, kv bool) []map[string]any {
	out := []map[string]any{}
	for _, d := range received {
		m := map[string]any{"fd": d.Fd, "kind": nil, "meta": nil}
		if d.Kind != "" {
			m["kind"] = d.Kind
		}
		if d.HasMeta {
			m["meta"] = base64.StdEncoding.EncodeToString(d.Meta)
		}
		if kv {
			m["kv"] = nil
			if d.KV != nil {
				m["kv"] = d.KV
			}
			if d.KVError != "" {
				m["kv_error"] = d.KVError
			}
		}
		out = append(out, m)
	}
	return out
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
