package bench

import (
	"strings"
	"testing"
)

func TestParseVarz(t *testing.T) {
	v, err := parseVarz(strings.NewReader(`{"server_id":"N1","in_msgs":1234,"out_msgs":5678,"connections":7,"routes":0}`))
	if err != nil || v.InMsgs != 1234 || v.OutMsgs != 5678 {
		t.Errorf("parseVarz = %+v, %v", v, err)
	}
	if _, err := parseVarz(strings.NewReader(`<html>404</html>`)); err == nil {
		t.Error("parseVarz accepted HTML")
	}
}

func TestClassify(t *testing.T) {
	holder := map[string]string{"devA": "n1", "devB": "n2"}
	for _, c := range []struct {
		subject string
		e       envelopeHead
		want    busCounts
	}{
		// A broadcast reaches every node but its sender.
		{"p.fan", envelopeHead{"m", "n1"}, busCounts{Fan: 1, Delivered: 2}},
		// A direct message reaches the node holding the device, unless
		// that node sent it.
		{"p.d.devB", envelopeHead{"m", "n1"}, busCounts{Direct: 1, Delivered: 1}},
		{"p.d.devA", envelopeHead{"m", "n1"}, busCounts{Direct: 1}},
		// An ack is sent by the node holding the device: no one else listens.
		{"p.d.devA", envelopeHead{"a", "n1"}, busCounts{Acks: 1}},
		// A device no node holds: nobody gets it.
		{"p.d.gone", envelopeHead{"m", "n1"}, busCounts{Direct: 1}},
		{"p.d.devB", envelopeHead{"t", "n1"}, busCounts{Other: 1, Delivered: 1}},
		{"p.d.devB", envelopeHead{}, busCounts{Other: 1, Delivered: 1}},
		{"p.fan", envelopeHead{"x", "n3"}, busCounts{Other: 1, Delivered: 2}},
		{"q.d.devB", envelopeHead{"m", "n1"}, busCounts{Other: 1}},
	} {
		if got := classify("p", c.subject, c.e, 3, holder); got != c.want {
			t.Errorf("classify(%s, %+v) = %+v, want %+v", c.subject, c.e, got, c.want)
		}
	}
	if got := classify("p", "p.fan", envelopeHead{"m", "n1"}, 1, nil); got != (busCounts{Fan: 1}) {
		t.Errorf("a broadcast on a one-node cluster = %+v, want one message and no copies", got)
	}
}
