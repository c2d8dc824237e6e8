package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// WriteTable prints r for people: one row per metric, one column per
// target, and the Herald/peer ratio with which way is better.
func WriteTable(w io.Writer, r *Report) error {
	version := "3.1.1"
	if r.MQTTVersion == 5 {
		version = "5.0"
	}
	switch r.Workload {
	case Cluster:
		fmt.Fprintf(w, "herald bench cluster: %d nodes × %s devices beside 1 node × %s, MQTT %s, %d CPUs", r.Nodes, thousands(float64(r.N), 0), thousands(float64(r.N), 0), version, r.CPUs)
	case Relay:
		fmt.Fprintf(w, "herald bench relay: %s notifications a phase over %s devices, %d CPUs", thousands(float64(r.N), 0), thousands(float64(min(r.N, relayDevices)), 0), r.CPUs)
	default:
		fmt.Fprintf(w, "herald bench %s: %s devices, MQTT %s, %d CPUs", r.Workload, thousands(float64(r.N), 0), version, r.CPUs)
	}
	if r.ServerCPUs != "" {
		fmt.Fprintf(w, " (servers on CPU %s)", r.ServerCPUs)
	}
	if r.Workload == Conns || r.Workload == Cluster {
		fmt.Fprintf(w, ", RSS slope from %s to %s connections", thousands(float64(r.From), 0), thousands(float64(r.N), 0))
	}
	runs := "1 run"
	if r.Runs > 1 {
		runs = fmt.Sprintf("median of %d runs", r.Runs)
	}
	fmt.Fprintf(w, ", %s, %s\n\n", runs, r.Started)

	var ran []Target
	for _, t := range r.Targets {
		if t.Skipped != "" {
			fmt.Fprintf(w, "%s: skipped: %s\n", t.Name, t.Skipped)
			continue
		}
		ran = append(ran, t)
	}
	if len(ran) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	head := "\t"
	for _, t := range ran {
		head += t.Name + "\t"
	}
	if len(r.Ratio) > 0 {
		if r.Workload == Cluster {
			head += ran[0].Name + " / " + ran[1].Name + "\t"
		} else {
			head += "Herald/" + strings.Fields(ran[1].Name)[0] + "\t"
		}
	}
	fmt.Fprintln(tw, head)
	labels := map[string]string{}
	width := 0
	for _, m := range metricsOf(r.Workload) {
		labels[m.Key] = m.Label
		if m.Unit != "" {
			labels[m.Key] += " (" + m.Unit + ")"
		}
		width = max(width, utf8.RuneCountInString(labels[m.Key]))
	}
	for _, m := range metricsOf(r.Workload) {
		present := false
		// Padding the label by hand keeps it left-aligned in a table
		// whose figures are right-aligned.
		row := labels[m.Key] + strings.Repeat(" ", width-utf8.RuneCountInString(labels[m.Key])) + "\t"
		for _, t := range ran {
			v, ok := t.Median[m.Key]
			present = present || ok
			if ok {
				row += thousands(v, m.Digits) + "\t"
			} else {
				row += "–\t"
			}
		}
		if q, ok := r.Ratio[m.Key]; ok {
			better := "lower is better"
			if m.Higher {
				better = "higher is better"
			}
			row += fmt.Sprintf("%.2f× (%s)\t", q, better)
		}
		if present {
			fmt.Fprintln(tw, row)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range ran {
		for i, run := range t.Runs {
			for _, e := range run.Errors {
				fmt.Fprintf(w, "%s run %d: client error: %s\n", t.Name, i+1, e)
			}
			for _, n := range run.Notes {
				fmt.Fprintf(w, "%s run %d: %s\n", t.Name, i+1, n)
			}
		}
	}
	return nil
}

// thousands formats v with digits decimals and commas between thousands.
func thousands(v float64, digits int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	s := strconv.FormatFloat(math.Abs(v), 'f', digits, 64)
	whole, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
	}
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return b.String()
}
