// Package conformance is a conformance suite for the graceful descriptor
// hand-off protocol (spec/protocol.md): anyone who implements the protocol,
// in any language, writes a small adapter program around the
// implementation (spec/adapter.md) and runs the suite against it.
//
// # Running it
//
// The command graceful-conformance (cmd/graceful-conformance) runs the
// suite once and prints a verdict per requirement:
//
//	go run github.com/gracefulfd/graceful/conformance/cmd/graceful-conformance \
//	    --adapter 'python3 myadapter.py' --strict --junit-report junit.xml
//
// A Go project can run it from its own tests instead, in the style of
// csi-sanity: Test runs the whole suite as one Go test, and GinkgoTest
// registers the specs inside a Ginkgo suite of its own.
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
// the label "slow".
//
// The suite never trusts the adapter's word. It plays the other end of
// the protocol itself with its own sendmsg and recvmsg, so that it can
// break any rule on purpose (wrong lengths, missing or extra descriptors,
// truncated control data, unknown versions, oversized metadata, early end
// of stream, more than 252 descriptors in one message) and check every
// byte and descriptor the implementation sends. It recognises descriptors
// by the st_dev and st_ino of the objects behind them, looking at the
// adapter's /proc/<pid>/fd itself; it proves that a received descriptor
// works by challenges only the real one can answer (a nonce through a
// connection accepted on a received listener, a datagram, a pread); and it
// counts leaks by the objects it sent that are still open in the adapter
// process. A run counts only if the adapter answers "done" and exits with
// status 0.
//
// Every requirement of spec/requirements.yaml gets a verdict: PASS, FAIL,
// XFAIL and XPASS (against a list of expected failures), SKIP, UNTESTED.
//
// The suite needs Linux, and root for the check of a peer running as
// another user (AUTH-1), which it skips otherwise.
package conformance
