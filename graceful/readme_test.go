//go:build linux

package graceful_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The README's Go snippets are function bodies; each must compile against
// the package as it is. The names they take from context (ln, file) are
// package variables here.
const readmePrelude = `package readme

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/gracefulfd/graceful/graceful"
)

var (
	ln   net.Listener
	file *os.File

	_ = errors.Is
	_ io.Reader
	_ = log.Printf
	_ = http.Serve
)
`

var _ = Describe("README.md", Label("docs"), func() {
	It("has Go snippets that compile against the package", func() {
		root, err := filepath.Abs("..")
		Expect(err).NotTo(HaveOccurred())
		readme, err := os.ReadFile(filepath.Join(root, "README.md"))
		Expect(err).NotTo(HaveOccurred())
		blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
		Expect(blocks).NotTo(BeEmpty())

		src := readmePrelude
		for i, b := range blocks {
			body := strings.TrimRight(b[1], "\n")
			lines := strings.Split(body, "\n")
			if !strings.HasPrefix(strings.TrimSpace(lines[len(lines)-1]), "return") {
				body += "\nreturn nil"
			}
			src += fmt.Sprintf("\nfunc snippet%d() error {\n%s\n}\n", i, body)
		}

		dir := GinkgoT().TempDir()
		goMod := fmt.Sprintf("module readme\n\ngo 1.26\n\nrequire github.com/gracefulfd/graceful v0.0.0\n\nreplace github.com/gracefulfd/graceful => %s\n", root)
		sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o644)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, "readme.go"), []byte(src), 0o644)).To(Succeed())

		cmd := exec.Command("go", "vet", "-mod=mod", ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off")
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "README snippets do not compile:\n%s\n%s", out, src)
	})
})
