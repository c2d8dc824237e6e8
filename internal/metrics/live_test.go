package metrics

import (
	"maps"
	"testing"
)

func TestTotals(t *testing.T) {
	var none *M
	if tt := none.Totals(); tt.Pushes != 0 || tt.Connections == nil {
		t.Errorf("nil M: Totals = %+v", tt)
	}
	none.AppAcked("a", 1) // does nothing, does not panic

	for _, perApp := range []bool{false, true} {
		m := New(Options{PerApp: perApp})
		m.Attached("mqtt")
		m.Attached("mqtt")
		m.Attached("ws")
		m.Detached("mqtt", "closed")
		m.Pushed("direct", "a", 2)
		m.Pushed("broadcast", "b", 1)
		m.Transport("ws").Sent(false)
		m.Transport("mqtt").Sent(true)
		m.Acked("ws", 1)
		m.AppAcked("a", 1)
		tt := m.Totals()
		if tt.Pushes != 3 || tt.Sent != 2 || tt.Acked != 1 || !maps.Equal(tt.Connections, map[string]float64{"mqtt": 1, "ws": 1}) {
			t.Errorf("per app %v: Totals = %+v", perApp, tt)
		}
		if a := m.AppTotals("a"); a != (AppTotals{Pushes: 2, Acked: 1}) {
			t.Errorf("per app %v: AppTotals(a) = %+v", perApp, a)
		}
		if c := m.AppTotals("c"); c != (AppTotals{}) {
			t.Errorf("AppTotals of an app that counted nothing = %+v", c)
		}
		seen := map[string]AppTotals{}
		m.EachApp(func(app string, t AppTotals) { seen[app] = t })
		if len(seen) != 2 || seen["b"].Pushes != 1 {
			t.Errorf("EachApp = %v", seen)
		}
	}
}
