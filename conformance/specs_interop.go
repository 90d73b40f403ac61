package conformance

import (
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// pairRun is one hand-off between two adapters of the implementation: a
// sender and a receiver on the same socket. The receiver's side is
// recorded as in a receiver scenario.
type pairRun struct {
	*receiverRun
	sender     *adapterProc
	serveErr   error
	serveOK    bool
	result     outcome
	senderDone error
}

func (e *env) runPair(fixtures func() (fixtureSet, error), senderCmd, receiverCmd []string) *pairRun {
	r := &pairRun{receiverRun: &receiverRun{}}
	dir, err := tempDir()
	if err != nil {
		r.suiteErr = err
		return r
	}
	defer os.RemoveAll(dir)
	r.path = filepath.Join(dir, "s")
	if r.set, err = fixtures(); err != nil {
		r.suiteErr = err
		return r
	}
	defer r.set.close()

	s, err := startAdapter("sender", senderCmd, r.set.fds(), e.cfg.wait(), e.log())
	if err != nil {
		r.startErr = err
		return r
	}
	r.sender = s
	defer s.kill()
	var serve struct {
		OK    bool        `json:"ok"`
		Error *adapterErr `json:"error"`
	}
	r.serveErr = s.call(map[string]any{"op": "serve", "socket": r.path, "descriptors": serveDescriptorsAt(r.set, seq(3, len(r.set))),
		"timeout_ms": ms(e.cfg.relaxed()), "ready_timeout_ms": ms(e.cfg.relaxed())}, "serveResponse", &serve)
	r.serveOK = serve.OK
	if r.serveErr != nil || !serve.OK {
		r.senderDone = s.finish()
		return r
	}

	a, err := startAdapter("receiver", receiverCmd, nil, e.cfg.wait(), e.log())
	if err != nil {
		r.startErr = err
		return r
	}
	r.a = a
	defer func() { r.stderr = s.stderr.String() + a.stderr.String() }()
	defer a.kill()
	r.replyErr = a.call(map[string]any{"op": "receive", "socket": r.path, "timeout_ms": ms(e.cfg.relaxed()),
		"ready": true, "reject": nil, "kv": false}, "receiveResponse", &r.reply)
	r.result.err = s.call(map[string]any{"op": "result"}, "resultResponse", &r.result.reply)
	if r.replyErr == nil {
		r.inspect()
		if r.reply.OK {
			r.prove()
		}
	}
	r.finishErr = a.finish()
	r.senderDone = s.finish()
	return r
}

// pairIDs are the requirements a pair's checks name: those of the roles
// the implementation plays in it (the reference plays the other).
type pairIDs struct{ identity, meta, agree string }

var (
	bothRoles    = pairIDs{"SND-2 RCV-1", "RCV-7", "ACK-1 ACK-2 RDY-2"}
	senderRole   = pairIDs{"SND-2", "SND-2", "ACK-2 RDY-2"}
	receiverRole = pairIDs{"RCV-1", "RCV-7", "ACK-1"}
)

func interopSpecs(e *env) {
	e.describe("the implementation as sender and as receiver", iut("pair"), func() {
		e.pairChecks(false, bothRoles, func() *pairRun { return e.runPair(mixedSet, e.cfg.Adapter, e.cfg.Adapter) })
	})
	e.describe("the implementation as sender, the reference as receiver", iut("sender"), func() {
		e.pairChecks(true, senderRole, func() *pairRun { return e.runPair(mixedSet, e.cfg.Adapter, e.cfg.Reference) })
	})
	e.describe("the reference as sender, the implementation as receiver", iut("receiver"), func() {
		e.pairChecks(true, receiverRole, func() *pairRun { return e.runPair(mixedSet, e.cfg.Reference, e.cfg.Adapter) })
	})
}

// pairChecks registers the checks of one hand-off between two adapters.
// Pairs with the reference run only when Config.Reference is set.
func (e *env) pairChecks(withReference bool, ids pairIDs, start func() *pairRun) {
	var r *pairRun
	get := e.scenario(func() {
		if withReference && len(e.cfg.Reference) == 0 {
			return
		}
		r = safely(start, func(err error) *pairRun { return &pairRun{receiverRun: &receiverRun{suiteErr: err}} })
	})
	mustRun := func() *pairRun {
		GinkgoHelper()
		get()
		if r == nil {
			untested("no reference adapter (Config.Reference, --reference)")
		}
		r.mustRun()
		Expect(r.serveErr).NotTo(HaveOccurred(), r.transcript())
		Expect(r.serveOK).To(BeTrue(), "the sender did not serve"+r.transcript())
		Expect(r.result.err).NotTo(HaveOccurred(), r.transcript())
		Expect(r.senderDone).NotTo(HaveOccurred(), "the sender adapter did not end with done and exit 0"+r.transcript())
		return r
	}
	e.verify("hand over the very descriptors, in order, each usable", ids.identity, func() {
		mustRun().expectSameDescriptors()
	})
	e.verify("hand each over with its metadata", ids.meta, func() {
		mustRun().expectMeta()
	})
	e.verify("agree that the hand-off is done and ready", ids.agree, func() {
		r := mustRun()
		Expect(r.reply.OK).To(BeTrue(), r.transcript())
		Expect(r.result.reply.OK).To(BeTrue(), "the sender reported failure"+r.transcript())
		Expect(r.result.reply.Outcome).To(Equal("ready"), r.transcript())
	})
}
