package push

import (
	"strings"
	"testing"
)

// Bodies of the provider push path: a unicast notification (what the 30,000
// single pushes a second are), and one carrying 1 KiB of nested data.
var (
	benchSmall = []byte(`{"audience":{"registration_id":["5J8p2bX0qg7aP1rLk3nQ4w9t"]},` +
		`"notification":{"title":"Your order shipped","body":"It arrives on Tuesday","badge":1},` +
		`"options":{"ttl":3600,"priority":"high","collapse_id":"order-1234"}}`)
	benchData = []byte(`{"audience":{"alias":["alice"],"tag":["news","sport"]},` +
		`"message":{"kind":"digest","items":[` + strings.Repeat(`{"id":12345,"title":"A headline of some length","url":"https://example.com/a/b"},`, 12) +
		`{"id":0}],"meta":{"v":2,"escaped":"caf\u00e9 \"quoted\""}},"options":{"ttl":600}}`)
)

func BenchmarkDecodeRequest(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{{"unicast", benchSmall}, {"data-1KiB", benchData}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeRequest(c.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
