package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestWorkerReplies(t *testing.T) {
	var b strings.Builder
	for _, rep := range []workerReply{
		{Devices: 3, Failed: 1, LastDone: 42, Connected: 2, Errors: []string{"1× connect: refused"}},
		{Err: "dial before start"},
	} {
		if err := writeLine(&b, rep); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(strings.NewReader(b.String() + "not json\n"))
	got, err := readReply(r)
	if err != nil || got.Devices != 3 || got.Failed != 1 || got.LastDone != 42 || got.Connected != 2 || len(got.Errors) != 1 {
		t.Errorf("first reply = %+v, %v", got, err)
	}
	if _, err := readReply(r); err == nil || !strings.Contains(err.Error(), "dial before start") {
		t.Errorf("a reply with an error: %v", err)
	}
	if _, err := readReply(r); err == nil {
		t.Error("a line that is not JSON was read as a reply")
	}
	if _, err := readReply(r); !errors.Is(err, errWorkerGone) {
		t.Errorf("at the end of the output: %v, want errWorkerGone", err)
	}
}

func TestWorkerRequestRoundTrip(t *testing.T) {
	var b strings.Builder
	req := workerRequest{Op: opStart, Start: &workerStart{Addr: "127.0.0.1:1883", Version: 4, KeepAlive: 300, InFlight: 32,
		Devices: []Device{{ClientID: "a", Username: "a", Password: "s", Topic: "devices/a"}}}, Timeout: time.Minute}
	if err := writeLine(&b, req); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("a request is not one line: %q", b.String())
	}
	var back workerRequest
	if err := json.Unmarshal([]byte(b.String()), &back); err != nil || !reflect.DeepEqual(back, req) {
		t.Errorf("the request came back as %+v (%v), was %+v", back, err, req)
	}
}
