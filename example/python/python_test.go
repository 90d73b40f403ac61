//go:build linux

// The Python demo service runs under graceful-supervisor and hands its
// listener to a Go generation (godemo) and back, without refusing or
// failing a request, and survives a SIGKILL with the listener it stored.
package python_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/supervisor"
)

func TestPythonDemo(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "python demo")
}

var gs, godemo, demo string

var _ = BeforeSuite(func() {
	// Bounds for what must happen eventually, generous for a loaded machine;
	// never a measure of speed.
	SetDefaultEventuallyTimeout(30 * time.Second)
	if _, err := exec.LookPath("python3"); err != nil {
		Skip("python3 is not installed")
	}
	var err error
	gs, err = gexec.Build("github.com/gracefulfd/graceful/cmd/graceful-supervisor")
	Expect(err).NotTo(HaveOccurred())
	godemo, err = gexec.Build("github.com/gracefulfd/graceful/example/python/godemo")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(gexec.CleanupBuildArtifacts)
	_, file, _, _ := runtime.Caller(0)
	demo = filepath.Join(filepath.Dir(file), "demo.py")
})

// client sends GET requests, one connection each, until stop is closed or
// max were sent, and records every answer and every failure.
type client struct {
	mu       sync.Mutex
	answers  map[string]int // "hello from python" / "hello from go"
	failures []string
	done     chan struct{}
}

func requests(url string, stop <-chan struct{}, max int) *client {
	c := &client{answers: map[string]int{}, done: make(chan struct{})}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer GinkgoRecover()
		defer close(c.done)
		for i := 0; i < max; i++ {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := hc.Get(url)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			c.mu.Lock()
			if err != nil {
				c.failures = append(c.failures, err.Error())
			} else {
				who, _, _ := strings.Cut(string(body), " pid ")
				c.answers[who]++
			}
			c.mu.Unlock()
		}
	}()
	return c
}

func get(url string) string {
	GinkgoHelper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

var _ = Describe("the Python demo service", func() {
	It("hands over to a Go generation and back under graceful-supervisor, and survives a SIGKILL", func() {
		dir, err := os.MkdirTemp("", "py")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, dir)
		run, handoff, current := filepath.Join(dir, "run"), filepath.Join(dir, "h.sock"), filepath.Join(dir, "current")
		deploy := func(program string) {
			GinkgoHelper()
			next := current + ".next"
			os.Remove(next)
			Expect(os.Symlink(program, next)).To(Succeed())
			Expect(os.Rename(next, current)).To(Succeed()) // atomically, as a deployment would
		}
		restart := func() {
			GinkgoHelper()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, err := supervisor.RequestRestart(ctx, run)
			Expect(err).NotTo(HaveOccurred())
		}
		serving := func(n int) supervisor.Generation {
			GinkgoHelper()
			var g supervisor.Generation
			Eventually(func() int {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				st, err := supervisor.RequestStatus(ctx, run)
				if err != nil || st.Serving == nil {
					return 0
				}
				g = *st.Serving
				return g.N
			}).WithTimeout(60*time.Second).Should(Equal(n), "generation %d does not serve", n)
			return g
		}

		deploy(demo)
		cmd := exec.Command(gs, "-dir", run, "-handoff", handoff, "--", current, "--addr", "127.0.0.1:0", "--handoff", handoff)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		s, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			s.Signal(syscall.SIGTERM)
			if s.Wait(30*time.Second).ExitCode() == -1 {
				s.Kill().Wait(10 * time.Second)
			}
		})
		g := serving(1)
		addr, ok := strings.CutPrefix(g.Status, "serving http on ")
		Expect(ok).To(BeTrue(), "status %q", g.Status)
		url := "http://" + addr + "/"
		Expect(get(url)).To(HavePrefix("hello from python pid "))

		stop := make(chan struct{})
		c := requests(url, stop, 100000)

		By("deploying the Go generation")
		deploy(godemo)
		restart()
		serving(2)
		Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[gen 2\] serving http on \S+ \(took it over\)`))
		Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[gen 1\] stopped`)) // until then, both may answer
		Expect(get(url)).To(HavePrefix("hello from go pid "))

		By("and back to Python")
		deploy(demo)
		restart()
		g3 := serving(3)
		Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[gen 3\] serving http on \S+ \(took it over\)`))
		Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[gen 2\] stopped`))
		Expect(get(url)).To(HavePrefix("hello from python pid "))

		By("killing the Python generation: the next one gets the stored listener from the supervisor")
		Expect(unix.Kill(g3.PID, syscall.SIGKILL)).To(Succeed())
		serving(4)
		Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[gen 4\] serving http on \S+ \(took it over\)`))
		Expect(get(url)).To(HavePrefix("hello from python pid "))

		close(stop)
		Eventually(c.done).WithTimeout(60 * time.Second).Should(BeClosed())
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, f := range c.failures {
			Expect(f).NotTo(ContainSubstring("connection refused"))
		}
		// A request in flight on the generation that was killed fails; no
		// other may.
		Expect(len(c.failures)).To(BeNumerically("<=", 1), "failed requests: %v", c.failures)
		Expect(c.answers).To(HaveKey("hello from python"))
		Expect(c.answers).To(HaveKey("hello from go"))
	})
})
