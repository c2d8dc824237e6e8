//go:build linux

package bench

import (
	"reflect"
	"strings"
	"testing"
)

// A banner as `herald serve` prints it on the first start of a cluster
// node (cmd/herald/serve.go, printBanner).
const firstBanner = `Herald is running (store: postgres; cluster node n1)

  HTTP API        http://127.0.0.1:41235
  register        POST http://127.0.0.1:41235/v1/devices
  MQTT            mqtt://127.0.0.1:41236   (client id and user = registration_id, password = device_secret, topic devices/{registration_id})

  app             default
  app_key         ak_3kQ9
  master_secret   ms_Zr7x   (shown once: keep it)
  admin token     as configured

For the client commands:
  export HERALD_SERVER=http://127.0.0.1:41235 HERALD_APP_KEY=ak_3kQ9 HERALD_MASTER_SECRET=ms_Zr7x
`

func TestParseBanner(t *testing.T) {
	key, secret, err := parseBanner(firstBanner)
	if err != nil || key != "ak_3kQ9" || secret != "ms_Zr7x" {
		t.Errorf("parseBanner = %q, %q, %v; want ak_3kQ9, ms_Zr7x", key, secret, err)
	}
	// A later start shows no secret: the schema was not fresh.
	later := strings.Replace(firstBanner, "ms_Zr7x   (shown once: keep it)", "(shown on first start; create another app with `herald app create NAME`)", 1)
	later = strings.Replace(later, " HERALD_MASTER_SECRET=ms_Zr7x", "", 1)
	if _, _, err := parseBanner(later); err == nil {
		t.Error("parseBanner found a master secret in a banner without one")
	}
	if _, _, err := parseBanner(""); err == nil {
		t.Error("parseBanner accepted an empty log")
	}
}

func TestChunks(t *testing.T) {
	for _, c := range []struct {
		n, size int
		want    [][2]int
	}{
		{15000, 15000, [][2]int{{0, 15000}}},
		{15001, 15000, [][2]int{{0, 7500}, {7500, 15001}}},
		{10, 3, [][2]int{{0, 2}, {2, 4}, {4, 7}, {7, 10}}},
		{0, 3, nil},
	} {
		if got := chunks(c.n, c.size); !reflect.DeepEqual(got, c.want) {
			t.Errorf("chunks(%d, %d) = %v, want %v", c.n, c.size, got, c.want)
		}
	}
}

func TestWithAppName(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:5432/test?application_name=bench_1&sslmode=disable"},
		{"postgresql://h/db", "postgresql://h/db?application_name=bench_1"},
		{"postgres://h/db?application_name=mine", "postgres://h/db?application_name=bench_1"},
		{"host=127.0.0.1 dbname=test", "host=127.0.0.1 dbname=test"},
	} {
		if got := withAppName(c.in, "bench_1"); got != c.want {
			t.Errorf("withAppName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
