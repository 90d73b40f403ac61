// Command mutants is a deliberately broken adapter: an independent
// implementation of the protocol on raw system calls and the wire package,
// with one fault switched on by --mutant NAME. The conformance suite must
// fail on the requirements each fault breaks (its self-test checks that);
// --mutant none is the control, which must pass.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"

	"github.com/gracefulfd/graceful/conformance/internal/kit"
)

// mutants maps each fault to what it does.
var mutants = map[string]string{
	"none":          "no fault: the control",
	"little-endian": "sender writes every integer little-endian",
	"truncate-meta": "sender cuts metadata over 64 KiB to 64 KiB instead of refusing it",
	"wrong-fd":      "sender sends /dev/null in place of the first descriptor",
	"any-uid":       "sender hands its set to a peer of any uid",
	"ready-on-ack":  "sender reports ready as soon as ACK arrives",
	"no-ack-check":  "sender counts a session as done without a matching ACK",
	"late-fds":      "sender attaches descriptors to the last byte of their BATCH frame",
	"batch-253":     "sender puts up to 253 descriptors in one BATCH",
	"blocking":      "sender puts the descriptors it sends in blocking mode",
	"reorder":       "receiver pairs descriptors with the records in reverse order",
	"drop-meta":     "receiver reports every descriptor without metadata",
	"liar":          "receiver closes what it got and reports other descriptors",
	"exit-early":    "adapter exits with status 0 without answering done",
	"hang":          "receiver reads without a deadline",
	"per-read":      "bounds each read, not each frame: a peer that trickles bytes holds it forever",
	"no-cloexec":    "receiver receives descriptors without close-on-exec",
	"ignore-ctrunc": "receiver ignores MSG_CTRUNC",
	"leak-on-error": "receiver keeps the descriptors of a failed session open",
	"one-cmsg":      "receiver parses only the first control message",
	"trust-welcome": "receiver accepts any version in WELCOME",
}

func main() {
	name := flag.String("mutant", "none", "the fault to switch on")
	list := flag.Bool("list", false, "list the faults and exit")
	flag.Parse()
	if *list {
		names := make([]string, 0, len(mutants))
		for n := range mutants {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Printf("%-14s %s\n", n, mutants[n])
		}
		return
	}
	if _, ok := mutants[*name]; !ok {
		fmt.Fprintf(os.Stderr, "mutants: unknown mutant %q (see --list)\n", *name)
		os.Exit(2)
	}
	e := &engine{fault: *name}
	os.Exit(kit.Main(e, kit.Options{
		Implementation:  "mutant " + *name,
		Features:        []string{"kv"},
		ExitWithoutDone: *name == "exit-early",
	}))
}
