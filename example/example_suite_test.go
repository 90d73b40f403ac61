//go:build linux

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
)

func TestExample(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "example")
}

var binary string

var _ = BeforeSuite(func() {
	var err error
	binary, err = gexec.Build("github.com/gracefulfd/graceful/example")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(gexec.CleanupBuildArtifacts)
	// Successors outlive the instance that started them: become their
	// parent then, so that the spec can reap them.
	Expect(unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)).To(Succeed())
})

// load sends requests from several clients, without keep-alive, until
// stopped or a bound is reached, and counts what failed.
type load struct {
	mu       sync.Mutex
	ok, fail int
	errs     []string
	pids     map[int]int
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(url string, clients int) *load {
	l := &load{pids: map[int]int{}, stop: make(chan struct{})}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(2 * time.Minute)
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; i < 50000 && time.Now().Before(deadline); i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				pid, err := get(client, url)
				l.mu.Lock()
				if err != nil {
					l.fail++
					l.errs = append(l.errs, err.Error())
				} else {
					l.ok++
					l.pids[pid]++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func get(client *http.Client, url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var pid int
	if _, err := fmt.Sscanf(string(body), "hello from pid %d", &pid); err != nil {
		return 0, fmt.Errorf("body %q: %w", body, err)
	}
	return pid, nil
}

func (l *load) servedBy(pid int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pids[pid]
}

var _ = Describe("the example web server", func() {
	It("restarts on SIGHUP, again and again, without failing a request", func() {
		dir, err := os.MkdirTemp("", "gfex")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, dir)
		sock := filepath.Join(dir, "s")
		cmd := exec.Command(binary, "-addr", "127.0.0.1:0", "-socket", sock)
		session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		Eventually(session.Err).WithTimeout(10 * time.Second).Should(gbytes.Say(`serving on (127\.0\.0\.1:\d+)`))
		addr := string(session.Err.Contents())
		addr = addr[strings.Index(addr, "serving on ")+len("serving on "):]
		addr = addr[:strings.Index(addr, ";")]

		l := startLoad("http://"+addr+"/", 4)
		pids := []int{cmd.Process.Pid}
		DeferCleanup(func() {
			close(l.stop)
			l.wg.Wait()
			last := pids[len(pids)-1]
			syscall.Kill(last, syscall.SIGTERM)
			for _, pid := range pids[1:] {
				Eventually(func() error {
					_, err := unix.Wait4(pid, nil, unix.WNOHANG, nil)
					if err == unix.ECHILD {
						return nil
					}
					if err != nil {
						return err
					}
					return unix.Kill(pid, 0) // gone once reaped
				}).WithTimeout(30*time.Second).Should(MatchError(unix.ESRCH), "pid %d", pid)
			}
			Eventually(session).WithTimeout(30 * time.Second).Should(gexec.Exit())
		})

		for restart := 1; restart <= 5; restart++ {
			current := pids[len(pids)-1]
			Eventually(func() int { return l.servedBy(current) }).WithTimeout(10 * time.Second).Should(BeNumerically(">", 10))
			Expect(syscall.Kill(current, syscall.SIGHUP)).To(Succeed())
			var next int
			Eventually(func() bool {
				l.mu.Lock()
				defer l.mu.Unlock()
				for pid := range l.pids {
					if !contains(pids, pid) {
						next = pid
						return true
					}
				}
				return false
			}).WithTimeout(20*time.Second).Should(BeTrue(), "restart %d: no new instance served", restart)
			pids = append(pids, next)
		}
		last := pids[len(pids)-1]
		Eventually(func() int { return l.servedBy(last) }).WithTimeout(10 * time.Second).Should(BeNumerically(">", 10))
		close(l.stop)
		l.wg.Wait()
		l.stop = make(chan struct{})
		Expect(l.fail).To(BeZero(), "failed requests: %v", l.errs)
		Expect(l.pids).To(HaveLen(6))
		By("served " + strconv.Itoa(l.ok) + " requests across 5 restarts")
	})
})

var _ = Describe("the example web server, restarted at once", func() {
	It("queues a SIGHUP that comes before it serves, and hands over once its hand-off socket is up", func() {
		dir, err := os.MkdirTemp("", "gfex")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, dir)
		cmd := exec.Command(binary, "-addr", "127.0.0.1:0", "-socket", filepath.Join(dir, "s"))
		session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		pid := cmd.Process.Pid

		By("sending SIGHUP at its first word, before its hand-off socket is up and it says it serves")
		// (The Go runtime handles SIGHUP from the start, so /proc cannot
		// tell when the program asked for it: its first log line, written
		// after signal.Notify, can.)
		Eventually(session.Err).WithTimeout(10 * time.Second).Should(gbytes.Say("first start"))
		Expect(syscall.Kill(pid, syscall.SIGHUP)).To(Succeed())

		By("waiting for a successor to take over, and the first instance to drain and exit")
		Eventually(session.Err).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[pid (\d+)\] \S+ \S+ took over`))
		m := regexp.MustCompile(`\[pid (\d+)\] \S+ \S+ took over`).FindStringSubmatch(string(session.Err.Contents()))
		next, err := strconv.Atoi(m[1])
		Expect(err).NotTo(HaveOccurred())
		Expect(next).NotTo(Equal(pid))
		output := func() string { return string(session.Err.Contents()) }
		Eventually(output).WithTimeout(10 * time.Second).Should(MatchRegexp(`\[pid %d\] \S+ \S+ drained, exiting`, pid))
		Eventually(func() error { return unix.Kill(pid, 0) }).WithTimeout(10 * time.Second).Should(MatchError(unix.ESRCH))
		Expect(string(session.Err.Contents())).NotTo(ContainSubstring("address already in use"))

		By("stopping the successor: the session ends once it has, with the first instance's status 0")
		Expect(syscall.Kill(next, syscall.SIGTERM)).To(Succeed())
		Eventually(func() error {
			_, err := unix.Wait4(next, nil, unix.WNOHANG, nil)
			if err != nil {
				return err
			}
			return unix.Kill(next, 0)
		}).WithTimeout(30 * time.Second).Should(HaveOccurred())
		Eventually(session).WithTimeout(10 * time.Second).Should(gexec.Exit(0))
	})
})

func contains(pids []int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}
