package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"time"
)

// client talks to the control plane's REST API.
type client struct {
	base string
	http *http.Client // default: 60s timeout
}

func (c *client) httpClient() *http.Client {
	if c.http != nil {
		return c.http
	}
	return &http.Client{Timeout: 60 * time.Second}
}

func (c *client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.base, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req, out)
}

// pushTarget uploads signed targets metadata, the new target's path and the
// artifact as multipart/form-data to endpoint (/api/v1/models or
// /api/v1/agents).
func (c *client) pushTarget(ctx context.Context, endpoint string, targets []byte, path string, artifact []byte, out any) error {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range []struct{ name, val string }{{"targets", string(targets)}, {"target", path}} {
		if err := mw.WriteField(f.name, f.val); err != nil {
			return err
		}
	}
	ap, err := mw.CreateFormFile("artifact", "artifact")
	if err != nil {
		return err
	}
	ap.Write(artifact)
	if err := mw.Close(); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.base, "/")+endpoint, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return c.send(req, out)
}

func (c *client) send(req *http.Request, out any) error {
	tok, err := apiToken()
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("control plane unreachable at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("control plane answered %d: %s", resp.StatusCode, e.Error)
		}
		return fmt.Errorf("control plane answered %s: %.200s", resp.Status, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("control plane answer is not the expected JSON: %w", err)
	}
	return nil
}
