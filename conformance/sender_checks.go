package conformance

import (
	"bytes"
	"errors"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// mustRun fails the spec when the scenario could not run or the adapter
// broke its contract, and skips it when the adapter lacks a feature.
func (r *senderRun) mustRun() {
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
	Expect(r.serveErr).NotTo(HaveOccurred(), "the adapter did not answer serve"+r.transcript())
	for _, o := range r.results {
		Expect(o.err).NotTo(HaveOccurred(), "the adapter did not answer result"+r.transcript())
	}
	Expect(r.finishErr).NotTo(HaveOccurred(), "the adapter did not end with done and exit status 0"+r.transcript())
}

// mustServe also requires that the implementation served the set.
func (r *senderRun) mustServe() {
	GinkgoHelper()
	r.mustRun()
	Expect(r.serveReply.OK).To(BeTrue(), "the implementation refused to serve the set"+r.transcript())
}

// session returns session i, failing when the script did not get there.
func (r *senderRun) session(i int) *sessionLog {
	GinkgoHelper()
	Expect(len(r.sessions)).To(BeNumerically(">", i), "session %d did not happen%s", i, r.transcript())
	return r.sessions[i]
}

// result returns result i.
func (r *senderRun) result(i int) outcome {
	GinkgoHelper()
	Expect(len(r.results)).To(BeNumerically(">", i), "no result %d%s", i, r.transcript())
	return r.results[i]
}

// violations returns the session's violations of the requirement id.
func (l *sessionLog) violations(id string) []violation {
	var out []violation
	for _, v := range l.viol {
		if v.ID == id {
			out = append(out, v)
		}
	}
	return out
}

// expectNo checks that the session broke none of the requirements ids.
func (r *senderRun) expectNo(l *sessionLog, ids ...string) {
	GinkgoHelper()
	for _, id := range ids {
		Expect(l.violations(id)).To(BeEmpty(), "%s broken%s", id, r.transcript())
	}
}

// expectWholeSet checks that a session delivered the whole set: WELCOME 1,
// BATCH frames, END with the count.
func (r *senderRun) expectWholeSet(l *sessionLog) {
	GinkgoHelper()
	Expect(l.end).NotTo(HaveOccurred(), "the set did not arrive whole"+r.transcript())
	Expect(l.welcome).To(Equal(1), "WELCOME version"+r.transcript())
	Expect(l.records).To(HaveLen(len(r.set)), "records received"+r.transcript())
	Expect(l.endCount).To(Equal(len(r.set)), "END count"+r.transcript())
}

// expectSameDescriptors checks that record i carries the suite's
// descriptor i (by identity) with its metadata.
func (r *senderRun) expectSameDescriptors(l *sessionLog) {
	GinkgoHelper()
	r.expectRecords(l)
	for i, f := range r.set {
		Expect(l.idents[i]).To(Equal(f.id), "descriptor %d is not the %s the sender was given%s", i, f.name, r.transcript())
		Expect(l.same[i]).NotTo(HaveOccurred(), "descriptor %d%s", i, r.transcript())
	}
}

// expectTableBack checks that the adapter's descriptor table, once every
// connection of the script has ended, is what it was when it began to
// serve: no connection, and no descriptor a peer pushed at it, left open.
func (r *senderRun) expectTableBack() {
	GinkgoHelper()
	Expect(r.tableErr).NotTo(HaveOccurred(), "counting the descriptors of pid %d%s", r.a.holder, r.transcript())
	extra := newDescriptors(r.tableBefore, r.tableAfter)
	Expect(extra).To(BeEmpty(), "pid %d holds descriptors it did not hold when it began to serve, after every connection ended:\n%s%s",
		r.a.holder, describeTable(extra), r.transcript())
}

// expectRecords checks that the whole set arrived with every record's
// metadata intact (identity is the business of expectSameDescriptors).
func (r *senderRun) expectRecords(l *sessionLog) {
	GinkgoHelper()
	r.expectWholeSet(l)
	for i, f := range r.set {
		rec := l.records[i]
		Expect(rec.HasMeta).To(Equal(f.hasMeta), "descriptor %d: HAS_META%s", i, r.transcript())
		Expect(bytes.Equal(rec.Meta, f.meta)).To(BeTrue(), "descriptor %d: metadata %s, given %s%s", i, clip(rec.Meta), clip(f.meta), r.transcript())
	}
}
