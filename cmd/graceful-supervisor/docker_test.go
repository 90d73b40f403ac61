//go:build linux

package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
)

// docker runs the docker client, bounded, and returns its output.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0") // the legacy builder pulls nothing for FROM scratch
	out, err := cmd.CombinedOutput()
	fmt.Fprintf(GinkgoWriter, "docker %s:\n%s", strings.Join(args, " "), out)
	return strings.TrimSpace(string(out)), err
}

var _ = Describe("in a Docker container FROM scratch", func() {
	It("is PID 1: the service serves, `restart` works through docker exec, and docker stop ends with the generation's status", func() {
		if _, err := exec.LookPath("docker"); err != nil {
			Skip("no docker client")
		}
		if _, err := docker("info"); err != nil {
			Skip("no Docker engine answers")
		}
		By("building static binaries and an image from scratch")
		dir := GinkgoT().TempDir()
		env := []string{"CGO_ENABLED=0"}
		for name, pkg := range map[string]string{
			"graceful-supervisor": "github.com/gracefulfd/graceful/cmd/graceful-supervisor",
			"testservice":         "github.com/gracefulfd/graceful/supervisor/internal/testservice",
		} {
			bin, err := gexec.BuildWithEnvironment(pkg, env)
			Expect(err).NotTo(HaveOccurred())
			b, err := os.ReadFile(bin)
			Expect(err).NotTo(HaveOccurred())
			Expect(os.WriteFile(filepath.Join(dir, name), b, 0o755)).To(Succeed())
		}
		Expect(os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(`FROM scratch
COPY graceful-supervisor testservice /
ENTRYPOINT ["/graceful-supervisor", "-dir", "/run/gs", "--", "/testservice", "-exit-code", "7"]
`), 0o644)).To(Succeed())
		tag := fmt.Sprintf("graceful-supervisor-test:%d", GinkgoRandomSeed())
		_, err := docker("build", "-q", "-t", tag, dir)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(docker, "rmi", "-f", tag)

		By("running it")
		id, err := docker("run", "-d", tag)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(docker, "rm", "-f", id)
		logs := func() string { out, _ := docker("logs", id); return out }
		Eventually(logs).WithTimeout(30 * time.Second).Should(MatchRegexp(`\[gen 1\] serving \S+ \(ppid 1\)`))
		Eventually(logs).Should(ContainSubstring(`msg="generation ready" gen=1`))

		By("restarting from inside the container")
		out, err := docker("exec", id, "/graceful-supervisor", "restart", "-dir", "/run/gs")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(MatchRegexp(`generation 2 \(pid \d+\) took over`))

		By("stopping it")
		_, err = docker("stop", "-t", "30", id)
		Expect(err).NotTo(HaveOccurred())
		code, err := docker("wait", id)
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal("7"))
		Expect(logs()).To(ContainSubstring("[gen 2] stopped"))
	})
})
