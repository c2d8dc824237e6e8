package packet

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to ParseFixedHeader and Decode. Whatever
// decodes must re-encode, decode again to the same value, and re-encode to
// the same bytes (the model is net/netip's FuzzParse); whatever fails must
// fail with a reason code. The seed corpus in testdata/fuzz/FuzzDecode holds
// the golden vectors and some near misses.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, version byte, data []byte) {
		v := Version31 + version%3
		fh, n, err := ParseFixedHeader(data, 0)
		if err != nil {
			if !errors.Is(err, ErrNeedMore) {
				mustCarryCode(t, err)
			}
			return
		}
		if len(data)-n < fh.Remaining {
			return
		}
		body := data[n : n+fh.Remaining]
		p, err := Decode(v, fh, body)
		if err != nil {
			mustCarryCode(t, err)
			return
		}
		if c, ok := p.(*Connect); ok {
			v = c.Version
		}
		enc, err := p.AppendTo(nil, v)
		if err != nil {
			t.Fatalf("decoded %#v but cannot encode it: %v", p, err)
		}
		fh2, n2, err := ParseFixedHeader(enc, 0)
		if err != nil || n2+fh2.Remaining != len(enc) {
			t.Fatalf("encoding % x has a bad header: %+v, %d, %v", enc, fh2, n2, err)
		}
		p2, err := Decode(v, fh2, enc[n2:])
		if err != nil {
			t.Fatalf("cannot decode the encoding % x of %#v: %v", enc, p, err)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("round trip changed the packet:\n was %#v\n now %#v", p, p2)
		}
		enc2, err := p2.AppendTo(nil, v)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n % x\n % x (%v)", enc, enc2, err)
		}
		// Decoding into a used packet must give the same result as into a
		// fresh one.
		if err := p2.Decode(v, fh, body, Limits{}); err != nil || !reflect.DeepEqual(p, p2) {
			t.Fatalf("decoding into a used packet: %v\n got %#v\nwant %#v", err, p2, p)
		}
	})
}

func mustCarryCode(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || !e.Code.IsError() {
		t.Fatalf("error without a failure reason code: %v", err)
	}
}
