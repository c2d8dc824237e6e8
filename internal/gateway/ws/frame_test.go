package ws

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestDecodeFrame(t *testing.T) {
	good := []struct {
		in   string
		want Frame
	}{
		{`{"type":"ping"}`, Frame{Type: TypePing}},
		{`{"type":"pong"}`, Frame{Type: TypePong}},
		{` {"type":"ack","ids":["m_1","m_2"]} `, Frame{Type: TypeAck, IDs: []string{"m_1", "m_2"}}},
		{`{"type":"ping","ids":null}`, Frame{Type: TypePing}},
	}
	for _, c := range good {
		got, err := DecodeFrame([]byte(c.in))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("DecodeFrame(%s) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := map[string]string{
		``:                      CodeBadFrame,
		`null`:                  CodeBadFrame,
		`"ping"`:                CodeBadFrame,
		`[]`:                    CodeBadFrame,
		`{}`:                    CodeBadFrame,
		`{"type":1}`:            CodeBadFrame,
		`{"type":"ping"}x`:      CodeBadFrame,
		`{"type":"ping"}{}`:     CodeBadFrame,
		`{"type":"ping","x":1}`: CodeBadFrame,
		`{"type":"ack","ids":["m_1"],"type":"ping"}`:                       CodeBadFrame,
		`{"type":"ack","ids":["m_1"],"IDs":["m_2"]}`:                       CodeBadFrame,
		`{"type":"pong","ids":[]}`:                                         CodeBadFrame,
		`{"type":"ack"}`:                                                   CodeBadFrame,
		`{"type":"ack","ids":[]}`:                                          CodeBadFrame,
		`{"type":"ack","ids":"m_1"}`:                                       CodeBadFrame,
		`{"type":"ack","ids":[1]}`:                                         CodeBadFrame,
		`{"type":"ack","ids":[""]}`:                                        CodeBadFrame,
		`{"type":"ack","ids":["` + strings.Repeat("x", MaxIDLen+1) + `"]}`: CodeBadFrame,
		`{"type":"hello"}`:                                                 CodeUnknownType,
		`{"type":"message"}`:                                               CodeUnknownType,
		`{"type":"` + strings.Repeat("é", 40) + `"}`:                       CodeUnknownType,
	}
	for in, code := range bad {
		_, err := DecodeFrame([]byte(in))
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Code != code || fe.Message == "" {
			t.Errorf("DecodeFrame(%q) error = %v, want a %s FrameError with a message", in, err, code)
		}
	}
}

// FuzzDecodeFrame: no input panics; an error is always a FrameError with a
// known code and a short message; a frame that decodes re-encodes to one
// that decodes the same (net/netip.FuzzParse's pattern).
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{`{"type":"ping"}`, `{"type":"ack","ids":["m_1"]}`, `{"type":"x"}`, `{`, `{"type":"ack","ids":[""]}`} {
		f.Add([]byte(s))
	}
	codes := []string{CodeBadFrame, CodeUnknownType}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) || !slices.Contains(codes, fe.Code) || fe.Message == "" {
				t.Fatalf("DecodeFrame(%q): error %#v is not a FrameError with a known code", b, err)
			}
			if len(fe.Message) > 1024 {
				t.Fatalf("DecodeFrame(%q): a %d-byte error message echoes too much", b, len(fe.Message))
			}
			return
		}
		again, err := DecodeFrame(EncodeFrame(fr))
		if err != nil || !reflect.DeepEqual(again, fr) {
			t.Fatalf("DecodeFrame(%q) = %+v, re-encoded %s decodes to %+v, %v", b, fr, EncodeFrame(fr), again, err)
		}
	})
}

// TestSeedCorpus checks that the seed corpus in testdata/fuzz/FuzzDecodeFrame,
// which plain go test runs through the fuzz target, is there and readable.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeFrame")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) < 10 {
		t.Fatalf("seed corpus %s: %d entries, %v", dir, len(entries), err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(string(b), "go test fuzz v1\n") {
			t.Errorf("%s: not a fuzz corpus file (%v)", e.Name(), err)
		}
	}
}

func ExampleDecodeFrame() {
	f, err := DecodeFrame([]byte(`{"type":"ack","ids":["m_1"]}`))
	fmt.Println(f.Type, f.IDs, err)
	_, err = DecodeFrame([]byte(`{"type":"subscribe"}`))
	fmt.Println(err)
	// Output:
	// ack [m_1] <nil>
	// ws: unknown_type: unknown frame type "subscribe"
}
