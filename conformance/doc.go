// Package conformance is a conformance suite for the graceful descriptor
// hand-off protocol (spec/protocol.md, version 1, revision 1.1): anyone who
// implements the protocol, in any language, writes a small adapter program
// around the implementation (spec/adapter.md) and runs the suite against it.
//
// # Running it
//
// The command graceful-conformance (cmd/graceful-conformance) runs the
// suite once and prints a verdict per requirement:
//
//	go run github.com/gracefulfd/graceful/conformance/cmd/graceful-conformance \
//	    --adapter 'python3 myadapter.py' --strict --reference builtin --junit-report junit.xml
//
// A Go project can run it from its own tests instead: Run runs the whole
// suite and returns the verdicts; Test runs it as one Go test, and
// GinkgoTest registers the specs inside a Ginkgo suite of its own (in the
// style of csi-sanity).
//
//	func TestConformance(t *testing.T) {
//		conformance.Test(t, conformance.Config{Adapter: []string{"./myadapter"}})
//	}
//
// # What it checks, and how
//
// Specs are grouped by section of the spec and labelled with the
// requirements they check (req:FRM-2), their level (level:MUST) and role
// (role:sender), and the adapter role they run (iut:sender, iut:receiver,
// iut:pair), so --ginkgo.label-filter selects them. SHOULD-level checks
// run only with Config.Strict. Long checks (deadlines, large sets) carry
// the label "slow". The scenarios run ahead of the specs that judge them,
// a few at a time (Config.Parallel): most of their time is spent waiting
// for deadlines.
//
// The suite never trusts the adapter's word. It plays the other end of
// the protocol itself with its own sendmsg and recvmsg, so that it can
// break any rule on purpose (wrong lengths, headers that break two rules,
// missing or extra descriptors, truncated control data, unknown versions
// and codes, oversized metadata, early end of stream, peers that trickle,
// stop reading, flood the sender with connections or push descriptors at
// it, a listener that never accepts, another user on either side) and
// check every byte and descriptor the implementation sends. It recognises
// a descriptor by its open file description, not only by the object
// behind it: kcmp(KCMP_FILE) where the kernel has it, otherwise the offset
// and flags of /proc/<pid>/fdinfo and a probe that moves its own copy's
// offset (or flips O_APPEND) and looks for the change. It hands the
// sender its descriptors at scrambled numbers, proves that a received
// descriptor works by challenges only the real one can answer (a nonce
// through a connection accepted on a received listener, a datagram, a
// pread), and counts the descriptors and threads of the adapter process
// before and after each session. A check never passes on a timeout: what
// an implementation must do at once is asked with deadlines longer than
// the suite waits. A run counts only if the adapter answers "done" and
// exits with status 0.
//
// Optional parts of the adapter contract (features: several sessions on a
// connection, a sender that dials, a policy, limits, abstract addresses)
// are asked only of an adapter that announces them; the checks that need
// one the adapter lacks are UNTESTED, never failed.
//
// # Verdicts
//
// Every requirement of spec/requirements.yaml gets a verdict: PASS, FAIL,
// XFAIL and XPASS (against a list of expected failures), SKIP (the
// machine could not run a check: a peer of another user needs root; or a
// SHOULD without strict), UNTESTED (no check reached it). A run passes
// when no required check failed (every MUST, and every SHOULD with
// strict), no expected failure passed, and no required requirement was
// skipped unless Config.AllowSkip (--allow-skip) names it or it is an
// expected failure. The report says why each requirement was skipped or
// untested.
//
// The suite tests itself against implementations it must fail: the
// mutants of conformance/adapters/mutants, each one fault that breaks one
// requirement, which its self-test fails on that very requirement;
// TRACEABILITY.md lists, per requirement, its checks and the mutants that
// prove each can fail.
//
// The suite needs Linux, and root for the checks that play a peer of
// another user (AUTH-1, AUTH-2, AUTH-5, AUTH-6, AUTH-7, AUTH-8, NEG-6),
// which it skips otherwise. The implementation must not run as the
// overflow user id (usually 65534, "nobody"): protocol AUTH-7 has it
// refuse every peer then.
package conformance
