package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/analytics/simulate"
)

// simulateAPI asks the control plane for a simulation and waits for its report.
func simulateAPI(name string, o simulateOptions, stdout, stderr io.Writer) int {
	in, err := o.request()
	if err == nil && (o.api == "" || o.key == "") {
		err = errors.New("--api (or LIMITR_API_URL) and --key (or LIMITR_API_KEY, an admin key) are required")
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	c := apiClient{base: strings.TrimRight(o.api, "/"), key: o.key, http: &http.Client{Timeout: time.Minute}}
	sim, err := c.simulate(ctx, o.env, in)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFail
	}
	if sim.Status == simulate.StatusFailed || sim.Result == nil {
		fmt.Fprintf(stderr, "%s: simulation %s failed: %s\n", name, sim.ID, sim.Error)
		return exitFail
	}
	candidate := "the document " + o.toFile
	if sim.CandidateVersion != nil {
		candidate = "version " + strconv.Itoa(*sim.CandidateVersion)
	}
	return printReport(stdout, sim.Result, o.json, candidate, "version "+strconv.Itoa(sim.Result.CurrentVersion))
}

// request builds the simulation request from the flags.
func (o *simulateOptions) request() (simulate.CreateInput, error) {
	var in simulate.CreateInput
	switch {
	case (o.toFile == "") == (o.toVersion == 0):
		return in, errors.New("name the candidate with one of --to-file and --to-version")
	case o.toVersion < 0 || o.fromVersion < 0:
		return in, errors.New("versions are numbered from 1")
	case o.toFile != "":
		src, err := os.ReadFile(o.toFile)
		if err != nil {
			return in, fmt.Errorf("--to-file: %s", fileError(err))
		}
		in.Document = string(src)
	default:
		in.Version = &o.toVersion
	}
	if o.fromVersion > 0 {
		in.BaselineVersion = &o.fromVersion
	}
	w, ok, err := o.window()
	if ok {
		in.From, in.To = &w.From, &w.To
	}
	return in, err
}

// apiClient talks to the control plane's REST API with an admin key.
type apiClient struct {
	base, key string
	http      *http.Client
}

// simulate queues a simulation and polls it until it has finished.
func (c apiClient) simulate(ctx context.Context, env string, in simulate.CreateInput) (simulate.Simulation, error) {
	var sim simulate.Simulation
	path := "/v1/environments/" + url.PathEscape(env) + "/simulations"
	if err := c.do(ctx, http.MethodPost, path, in, http.StatusAccepted, &sim); err != nil {
		return sim, err
	}
	wait := 100 * time.Millisecond
	for sim.Status == simulate.StatusQueued || sim.Status == simulate.StatusRunning {
		select {
		case <-ctx.Done():
			return sim, fmt.Errorf("simulation %s still %s: %w", sim.ID, sim.Status, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
		if err := c.do(ctx, http.MethodGet, path+"/"+sim.ID.String(), nil, http.StatusOK, &sim); err != nil {
			return sim, err
		}
	}
	return sim, nil
}

// do sends a JSON request and decodes a reply with the wanted status; any other is
// an error with the problem's detail and field errors.
func (c apiClient) do(ctx context.Context, method, path string, body any, want int, dst any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return problemError(resp.StatusCode, out)
	}
	return json.Unmarshal(out, dst)
}

// problemError renders an RFC 9457 problem: its detail, then each field error.
func problemError(code int, body []byte) error {
	var p struct {
		Detail string `json:"detail"`
		Errors []struct {
			Path    string `json:"path"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &p) != nil || p.Detail == "" {
		return fmt.Errorf("the API answered %d: %s", code, strings.TrimSpace(string(body)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the API answered %d: %s", code, p.Detail)
	for _, e := range p.Errors {
		fmt.Fprintf(&b, "\n  %s: %s", e.Path, e.Message)
	}
	return errors.New(b.String())
}
