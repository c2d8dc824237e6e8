package server

import (
	"net/http"
	"strings"
	"testing"
)

// Unknown paths and wrong methods answer the JSON error shape; GET / says
// where to start, as JSON or, to a browser, as a page.
func TestMissesAnswerJSON(t *testing.T) {
	n := startNode(t, testConfig(t))
	if st, code := n.call("GET", "/no/such/route", nil, nil, nil); st != http.StatusNotFound || code != "not_found" {
		t.Errorf("an unknown path: %d %q, want 404 not_found", st, code)
	}
	req, _ := http.NewRequest("PUT", n.url+"/v1/push", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("PUT /v1/push: %d, Allow %q, %s; want 405 with Allow: POST in JSON", resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"))
	}
	if st, code := n.call("PUT", "/v1/push", nil, nil, nil); code != "method_not_allowed" {
		t.Errorf("PUT /v1/push: %d %q, want method_not_allowed", st, code)
	}
	var index struct {
		Links map[string]string `json:"links"`
	}
	if st, _ := n.call("GET", "/", nil, nil, &index); st != http.StatusOK || index.Links["demo"] != n.url+"/demo" || index.Links["console"] != n.url+"/console/" {
		t.Errorf("GET /: %d %v, want links to the demo and the console", st, index.Links)
	}
	req, _ = http.NewRequest("GET", n.url+"/", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET / from a browser: %s, want a page", resp.Header.Get("Content-Type"))
	}
}
