package conformance

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
	"github.com/gracefulfd/graceful/harness"
)

// transcript tells what happened, for failure messages.
func (r *receiverRun) transcript() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n--- receiver run (socket %s) ---\n", r.path)
	if r.a != nil {
		fmt.Fprintf(&b, "adapter pid %d (%s)\n", r.a.pid, r.a.hello.Implementation)
	}
	if r.connectErr != nil {
		fmt.Fprintf(&b, "connect: %v\n", r.connectErr)
	}
	if r.helloErr != nil {
		fmt.Fprintf(&b, "HELLO: %v\n", r.helloErr)
	} else {
		fmt.Fprintf(&b, "HELLO: % x\n", r.helloRaw)
	}
	if r.scriptErr != nil {
		fmt.Fprintf(&b, "suite's sender script: %v\n", r.scriptErr)
	}
	for _, f := range r.back {
		fmt.Fprintf(&b, "frame back: %v payload % x\n", f.Header, f.Payload[:min(len(f.Payload), 64)])
	}
	fmt.Fprintf(&b, "stream end: %v\n", orEOF(r.backEnd))
	for _, v := range r.viol {
		fmt.Fprintf(&b, "wire: %v\n", v)
	}
	fmt.Fprintf(&b, "answer: ok=%v error=%v descriptors=%d (err %v), %v after the script\n", r.reply.OK, r.reply.Error, len(r.reply.Descriptors), r.replyErr, r.elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "held descriptors that the suite sent: %d\n", len(r.held))
	if r.connections > 1 {
		fmt.Fprintf(&b, "connections accepted: %d\n", r.connections)
	}
	for _, n := range r.notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if r.finishErr != nil {
		fmt.Fprintf(&b, "exit: %v\n", r.finishErr)
	}
	if r.stderr != "" {
		fmt.Fprintf(&b, "stderr (tail):\n%s\n", tail(r.stderr, 2000))
	}
	return b.String()
}

func orEOF(err error) string {
	if err == nil {
		return "end of stream"
	}
	return err.Error()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// mustRun fails the spec when the scenario could not run, skips it when
// the adapter does not offer what it needs, and fails it when the adapter
// broke its contract (a run whose ending is not done and exit 0 proves
// nothing).
func (r *receiverRun) mustRun() {
	GinkgoHelper()
	if r.suiteErr != nil {
		Fail("the suite could not run the scenario: " + r.suiteErr.Error() + r.transcript())
	}
	var nf errNoFeature
	if errors.As(r.startErr, &nf) {
		untested("the adapter does not offer the feature %q", string(nf))
	}
	if errors.Is(r.startErr, errNotRoot) {
		skipFor("%v", errNotRoot)
	}
	Expect(r.startErr).NotTo(HaveOccurred(), "the adapter did not start"+r.transcript())
	Expect(r.replyErr).NotTo(HaveOccurred(), "the adapter did not answer receive"+r.transcript())
	Expect(r.finishErr).NotTo(HaveOccurred(), "the adapter did not end with done and exit status 0"+r.transcript())
}

// expectHello checks the implementation's HELLO byte for byte (NEG-1, FRM-1).
func (r *receiverRun) expectHello() {
	GinkgoHelper()
	Expect(r.connectErr).NotTo(HaveOccurred(), "the implementation did not connect"+r.transcript())
	Expect(r.helloErr).NotTo(HaveOccurred(), "no well-formed HELLO"+r.transcript())
	h := r.helloRaw
	Expect(h).To(HaveLen(20), "HELLO is 8 header bytes and 12 payload bytes"+r.transcript())
	Expect(h[:8]).To(Equal([]byte{1, 0, 0, 0, 0, 0, 0, 12}), "HELLO header: type 1, flags 0, nfds 0, length 12 big-endian"+r.transcript())
	Expect(string(h[8:16])).To(Equal(wire.Magic), "HELLO magic"+r.transcript())
	lo, hi := binary.BigEndian.Uint16(h[16:18]), binary.BigEndian.Uint16(h[18:20])
	Expect(lo).To(BeNumerically("<=", 1), "min_version (big-endian) must include version 1"+r.transcript())
	Expect(hi).To(BeNumerically(">=", 1), "max_version (big-endian) must include version 1"+r.transcript())
	Expect(lo).To(BeNumerically("<=", hi), "min_version <= max_version"+r.transcript())
}

// expectAck checks that the implementation acknowledged the whole set with
// one well-formed ACK (then READY when asked and it sends one) and closed.
func (r *receiverRun) expectAck(ready bool) {
	GinkgoHelper()
	Expect(r.viol).To(BeEmpty(), "the implementation's frames broke the spec"+r.transcript())
	Expect(r.back).NotTo(BeEmpty(), "no ACK"+r.transcript())
	ack := r.back[0]
	Expect(ack.Header.Type).To(Equal(wire.TypeAck), "the first frame back must be ACK"+r.transcript())
	raw := wire.AppendHeader(nil, ack.Header)
	raw = append(raw, ack.Payload...)
	Expect(raw).To(Equal(wire.AppendCount(nil, wire.TypeAck, uint32(len(r.set)))), "ACK with the count, big-endian"+r.transcript())
	rest := r.back[1:]
	if ready {
		Expect(rest).To(HaveLen(1), "READY after ACK"+r.transcript())
		Expect(wire.AppendHeader(nil, rest[0].Header)).To(Equal(wire.AppendReady(nil)), "READY frame"+r.transcript())
	} else {
		Expect(rest).To(BeEmpty(), "nothing after ACK"+r.transcript())
	}
	Expect(r.backEnd).NotTo(HaveOccurred(), "the implementation must close the connection after the session"+r.transcript())
}

// expectSameDescriptors checks that the implementation handed over the
// very descriptors the suite sent, in record order, by their identity in
// /proc/<pid>/fd and by a challenge on each.
func (r *receiverRun) expectSameDescriptors() {
	GinkgoHelper()
	Expect(r.reply.OK).To(BeTrue(), "the session failed"+r.transcript())
	r.expectHandedOver()
}

// expectHandedOver checks the descriptors the implementation reported,
// whatever it said of the session: the very descriptors the suite sent,
// in record order.
func (r *receiverRun) expectHandedOver() {
	GinkgoHelper()
	Expect(r.reply.Descriptors).To(HaveLen(len(r.set)), "descriptors handed over"+r.transcript())
	for i, d := range r.reply.Descriptors {
		p, ok := r.reported[d.Fd]
		Expect(ok).To(BeTrue(), "descriptor %d: fd %d is not open in pid %d%s", i, d.Fd, r.a.holder, r.transcript())
		Expect(p.ID).To(Equal(r.set[i].id), "descriptor %d: fd %d is not the %s the suite sent as record %d%s",
			i, d.Fd, r.set[i].name, i, r.transcript())
		Expect(r.same[i]).NotTo(HaveOccurred(), "descriptor %d: fd %d%s", i, d.Fd, r.transcript())
		if r.challErrs != nil {
			Expect(r.challErrs[i]).NotTo(HaveOccurred(), "descriptor %d (%s) failed its challenge%s", i, r.set[i].name, r.transcript())
		}
	}
}

// expectMeta checks each descriptor's metadata, and its kind when the
// implementation reports one (RCV-7).
func (r *receiverRun) expectMeta() {
	GinkgoHelper()
	Expect(r.reply.OK).To(BeTrue(), "the session failed"+r.transcript())
	Expect(r.reply.Descriptors).To(HaveLen(len(r.set)), "descriptors handed over"+r.transcript())
	for i, d := range r.reply.Descriptors {
		meta, has, err := d.meta()
		Expect(err).NotTo(HaveOccurred())
		want := r.set[i]
		Expect(has).To(Equal(want.hasMeta), "descriptor %d: metadata present=%v, the sender's record says %v%s", i, has, want.hasMeta, r.transcript())
		if want.hasMeta {
			Expect(bytes.Equal(meta, want.meta)).To(BeTrue(), "descriptor %d: metadata %q, sent %q%s", i, clip(meta), clip(want.meta), r.transcript())
		}
		if d.Kind != nil {
			Expect(*d.Kind).To(Equal(want.kind.String()), "descriptor %d: kind%s", i, r.transcript())
		}
	}
}

func clip(b []byte) string {
	if len(b) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// expectCloExec checks that every received descriptor is close-on-exec in
// the adapter process (TRN-4).
func (r *receiverRun) expectCloExec() {
	GinkgoHelper()
	Expect(r.held).NotTo(BeEmpty(), "no descriptor received"+r.transcript())
	for _, p := range r.held {
		Expect(p.CloseOnExec()).To(BeTrue(), "fd %d of pid %d is not close-on-exec%s", p.Num, r.a.holder, r.transcript())
	}
}

// expectFailed checks that the session failed: no success answer, no ACK.
func (r *receiverRun) expectFailed() {
	GinkgoHelper()
	Expect(r.reply.OK).To(BeFalse(), "the implementation accepted the session"+r.transcript())
	Expect(r.framesOf(wire.TypeAck)).To(BeEmpty(), "the implementation acknowledged the set"+r.transcript())
}

// expectErrorFrame checks ERR-1: an ERROR frame with one of codes, then
// the connection closed.
func (r *receiverRun) expectErrorFrame(codes ...wire.Code) {
	GinkgoHelper()
	Expect(r.back).To(HaveLen(1), "one frame back, ERROR, and nothing else"+r.transcript())
	Expect(r.errorCodes()).To(HaveLen(1), "one ERROR frame"+r.transcript())
	Expect(r.errorCodes()[0]).To(BeElementOf(codes), "ERROR code"+r.transcript())
	Expect(r.backEnd).NotTo(HaveOccurred(), "the implementation must close the connection after ERROR"+r.transcript())
}

// expectNoLeak checks that the adapter process holds, of the objects the
// suite sent, exactly the descriptors it reported as handed over (RCV-6).
func (r *receiverRun) expectNoLeak() {
	GinkgoHelper()
	reported := map[int]bool{}
	for _, d := range r.reply.Descriptors {
		reported[d.Fd] = true
	}
	var leaked []string
	for _, p := range r.held {
		if !reported[p.Num] {
			leaked = append(leaked, fmt.Sprintf("fd %d (%v)", p.Num, p.ID))
		}
	}
	Expect(leaked).To(BeEmpty(), "pid %d still holds descriptors the suite sent that its user never got%s", r.a.holder, r.transcript())
	r.expectTable()
}

// expectTable checks that the holder's descriptor table after the session
// is the one before plus the descriptors it reported (RCV-6): no socket,
// no pidfd, nothing else left behind.
func (r *receiverRun) expectTable() {
	GinkgoHelper()
	Expect(r.tableErr).NotTo(HaveOccurred(), "counting the descriptors of pid %d%s", r.a.holder, r.transcript())
	extra := newDescriptors(r.tableBefore, r.tableAfter)
	reported := map[int]bool{}
	for _, d := range r.reply.Descriptors {
		reported[d.Fd] = true
	}
	var left []harness.FD
	for _, fd := range extra {
		if !reported[fd.Num] {
			left = append(left, fd)
		}
	}
	Expect(left).To(BeEmpty(), "pid %d holds descriptors it did not hold before the session and did not hand to its user:\n%s%s",
		r.a.holder, describeTable(left), r.transcript())
}

// newDescriptors returns the descriptors of after that before did not have.
func newDescriptors(before, after []harness.FD) []harness.FD {
	had := map[[2]any]bool{}
	for _, fd := range before {
		had[[2]any{fd.Num, fd.Target}] = true
	}
	var out []harness.FD
	for _, fd := range after {
		if !had[[2]any{fd.Num, fd.Target}] {
			out = append(out, fd)
		}
	}
	return out
}

// expectReported checks the error code the implementation reported to its
// user (graded only where a requirement is about that report).
func (r *receiverRun) expectReported(codes ...string) {
	GinkgoHelper()
	Expect(r.reply.OK).To(BeFalse(), "the implementation reported success"+r.transcript())
	Expect(r.reply.code()).To(BeElementOf(codes), "the failure the implementation reported to its user"+r.transcript())
}

// expectNothingDelivered checks RCV-5: a failed session hands over nothing.
func (r *receiverRun) expectNothingDelivered() {
	GinkgoHelper()
	Expect(r.reply.Descriptors).To(BeEmpty(), "descriptors of a failed session were handed to the user"+r.transcript())
}

// skipUnlessDelivered skips a secondary check when the session failed:
// the scenario's primary check reports that.
func (r *receiverRun) skipUnlessDelivered() {
	GinkgoHelper()
	if !r.reply.OK {
		untested("the session failed: judged by the scenario's primary check")
	}
}
