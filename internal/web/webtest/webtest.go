// Package webtest runs the dashboard's browser tests in a real headless Chromium,
// driven by chromedp. Chromium is found on the machine or installed from Debian
// packages by scripts/chromium.sh; when neither works the test fails, saying why: a
// browser test that skipped would pass without testing anything.
package webtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// installTimeout bounds scripts/chromium.sh, which may download Chromium.
const installTimeout = 10 * time.Minute

// ChromiumPath returns the Chromium to drive: $LIMITR_CHROMIUM, one on the PATH, or one
// scripts/chromium.sh installs.
func ChromiumPath() (string, error) {
	if p := os.Getenv("LIMITR_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	script, err := findScript()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, script)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("webtest: no Chromium, and %s could not install it (%v):\n%s", script, err, stderr.String())
	}
	p := strings.TrimSpace(out.String())
	if p == "" {
		return "", fmt.Errorf("webtest: %s printed no browser path", script)
	}
	return p, nil
}

// findScript locates scripts/chromium.sh from the module root above the working
// directory (a package's directory under `go test`).
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "scripts", "chromium.sh"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("webtest: no go.mod above the working directory, so no scripts/chromium.sh")
		}
		dir = parent
	}
}

// Browser is one headless Chromium process. Start one per test package (it takes a
// second or so) and give each test its own Tab: tabs do not share cookies.
type Browser struct {
	allocCtx    context.Context
	cancelAlloc context.CancelFunc
	browserCtx  context.Context
	cancel      context.CancelFunc
}

// Start launches Chromium headless.
func Start() (*Browser, error) {
	path, err := ChromiumPath()
	if err != nil {
		return nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("disable-dev-shm-usage", true), // containers have a small /dev/shm
		chromedp.Flag("disable-gpu", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to sandbox as root
	}
	b := &Browser{}
	b.allocCtx, b.cancelAlloc = chromedp.NewExecAllocator(context.Background(), opts...)
	b.browserCtx, b.cancel = chromedp.NewContext(b.allocCtx)
	if err := chromedp.Do(b.browserCtx); err != nil { // starts the process
		b.Close()
		return nil, fmt.Errorf("webtest: start %s: %w", path, err)
	}
	return b, nil
}

// Close ends the browser process.
func (b *Browser) Close() {
	if b.cancel != nil {
		b.cancel()
	}
	if b.cancelAlloc != nil {
		b.cancelAlloc()
	}
}

// Tab opens a tab in a fresh browser context (its own cookies and storage), closed
// when tb ends; its context also ends after timeout.
func (b *Browser) Tab(tb testing.TB, timeout time.Duration) context.Context {
	tb.Helper()
	tabCtx, cancel := chromedp.NewContext(b.browserCtx, chromedp.WithNewBrowserContext())
	tb.Cleanup(cancel)
	// The first run opens the tab; the timeout applies to what follows, as chromedp asks.
	if err := chromedp.Do(tabCtx); err != nil {
		tb.Fatalf("webtest: open a tab: %v", err)
	}
	ctx, cancelTimeout := context.WithTimeout(tabCtx, timeout)
	tb.Cleanup(cancelTimeout)
	return ctx
}

// Settled waits until htmx has no request in flight and nothing swapping or settling
// (and the page has loaded): a click on a node htmx is about to replace goes nowhere,
// or fails with "Could not find node with given id". Put it before any action that
// follows a boosted navigation.
func Settled() chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[bool](`document.readyState === "complete" && !document.querySelector(".htmx-request, .htmx-swapping, .htmx-settling, .htmx-added")`)
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := poll(ctx, t)
		return chromedp.Void{}, err
	}
}
