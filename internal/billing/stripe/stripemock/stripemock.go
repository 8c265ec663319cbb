// Package stripemock runs stripe-mock (github.com/stripe/stripe-mock) for tests: a
// stateless fake of Stripe's API that checks every request against Stripe's OpenAPI
// spec (unknown or malformed parameters are a 400) and answers with fixtures.
//
// Version pins the stripe-mock whose spec matches the API version stripe-go v76 speaks
// (2023-10-16). Start uses a stripe-mock built at that version from PATH, GOBIN or
// GOPATH/bin, and otherwise installs it with `go install` into the user cache. It fails
// the test, with the command to run, when it can do neither: tests of the Stripe mirror
// never skip silently.
package stripemock

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	// Module is stripe-mock's module path.
	Module = "github.com/stripe/stripe-mock"
	// Version is the stripe-mock these tests are written against.
	Version = "v0.183.0"
	// startTimeout bounds loading the spec and binding the port (about a second).
	startTimeout = 30 * time.Second
	// installTimeout bounds `go install` (a download and a build on a loaded machine).
	installTimeout = 10 * time.Minute
)

// Start runs a stripe-mock listening on 127.0.0.1 only, at a port the system picks, and
// returns its base URL ("http://127.0.0.1:PORT") for stripe.WithAPIBase. The process is
// killed when the test ends. Each call starts a new one: share it between subtests.
func Start(tb testing.TB) string {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatalf("stripemock: %v", err)
	}
	// Both listeners are given: -http-addr alone still opens HTTPS on every interface
	// at the fixed port 12112.
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	setDeathSignal(cmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatalf("stripemock: %v", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("stripemock: starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	// stripe-mock prints "Listening for HTTP at address: 127.0.0.1:PORT" once bound;
	// reading the port from it avoids racing another process for a port picked here.
	addrc := make(chan string, 1)
	var startup bytes.Buffer // what it printed before listening, for the failure message
	go func() {
		defer func() {
			_ = cmd.Wait()
			close(exited)
		}()
		sc := bufio.NewScanner(stdout)
		const prefix = "Listening for HTTP at address: "
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				addrc <- strings.TrimSpace(addr)
				break
			}
			startup.WriteString(sc.Text() + "\n")
		}
		// It logs every request to stdout; drain it so that it never blocks.
		_, _ = io.Copy(io.Discard, stdout)
	}()

	var addr string
	select {
	case addr = <-addrc:
	case <-exited:
		tb.Fatalf("stripemock: %s exited before listening:\n%s%s", bin, startup.String(), stderr.String())
	case <-time.After(startTimeout):
		tb.Fatalf("stripemock: %s did not listen within %s", bin, startTimeout)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		tb.Fatalf("stripemock: listening at %q, want 127.0.0.1", addr)
	}
	if err := waitAccepting(addr, startTimeout); err != nil {
		tb.Fatalf("stripemock: %v", err)
	}
	return "http://" + addr
}

func waitAccepting(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Binary returns the path of a stripe-mock built at Version, installing one into the
// user cache if none is found.
func Binary() (string, error) {
	var candidates []string
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		candidates = append(candidates, p)
	}
	for _, dir := range []string{goEnv("GOBIN"), filepath.Join(goEnv("GOPATH"), "bin")} {
		if dir != "" && dir != "bin" {
			candidates = append(candidates, filepath.Join(dir, "stripe-mock"))
		}
	}
	cacheDir := ""
	if dir, err := os.UserCacheDir(); err == nil {
		cacheDir = filepath.Join(dir, "limitr", "stripe-mock-"+Version)
		candidates = append(candidates, filepath.Join(cacheDir, "stripe-mock"))
	}
	for _, p := range candidates {
		if isVersion(p) {
			return p, nil
		}
	}
	if cacheDir == "" {
		return "", fmt.Errorf("no stripe-mock %s found and no user cache directory to install one into: run `go install %s@%s`", Version, Module, Version)
	}
	if err := install(cacheDir); err != nil {
		return "", err
	}
	return filepath.Join(cacheDir, "stripe-mock"), nil
}

// isVersion reports whether the file is a stripe-mock built from Module at Version
// (`go version -m` shows the same). Release binaries built otherwise do not qualify.
func isVersion(path string) bool {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return false
	}
	return info.Main.Path == Module && info.Main.Version == Version
}

func install(dir string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("no stripe-mock %s found and no go command to install it: run `go install %s@%s`", Version, Module, Version)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", Module+"@"+Version)
	// GOBIN puts it where Binary looks next time.
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("installing stripe-mock: `go install %s@%s` failed (%v):\n%s", Module, Version, err, out)
	}
	return nil
}

func goEnv(name string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
