package main

import (
	"fmt"
	"time"

	"github.com/metrocast/metrocast/loadtest/result"
)

// slowTolerance is how far the readers' p99 may move while others stop
// reading, before slow-consumers fails: twice the baseline, or the baseline
// plus 5 ms if that is more (a sub-millisecond baseline doubles with noise).
func slowTolerance(base float64) float64 { return max(2*base, base+5) }

// checks judges the run against the targets.
func (r *runner) checks() {
	o, res := r.o, r.res
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	readers := res.Accounting["readers"]
	if readers == nil {
		readers = &result.Accounting{}
	}

	if c := res.Connect; c != nil {
		res.check("every connection up", c.Up == int64(o.Conns), fmt.Sprintf("%d of %d", c.Up, o.Conns), fmt.Sprint(o.Conns))
		if o.Scenario == "connect-storm" {
			res.check(fmt.Sprintf("connect p99 at %g/s", o.ConnRate), c.Latency.Count > 0 && c.Latency.P99 < ms(o.TargetConnect),
				result.Ms(c.Latency.P99), "< "+result.Ms(ms(o.TargetConnect)))
		}
	}
	dropped := readers.Dropped
	res.check("no connection dropped", dropped == 0, fmt.Sprint(dropped), "0")
	if o.Scenario == "idle" || o.Scenario == "connect-storm" {
		return
	}

	if p := res.Publisher; p != nil {
		res.check("ingest accepted every frame", p.Errors == 0, fmt.Sprint(p.Errors), "0")
	}
	res.check("zero loss", readers.Lost == 0 && readers.Owed > 0,
		fmt.Sprintf("%d lost of %d owed", readers.Lost, readers.Owed), "0 lost")
	res.check("no duplicates", readers.Dups == 0, fmt.Sprint(readers.Dups), "0")
	res.check("in order", readers.Late == 0, fmt.Sprint(readers.Late, " late"), "0")
	res.check("protocol as documented", readers.Bad+readers.BadTime == 0, fmt.Sprint(readers.Bad+readers.BadTime, " surprises"), "0")

	for _, p := range res.Phases {
		if p.Name == "warmup" {
			continue
		}
		l := p.Latency
		res.check(p.Name+": p99", l.Count > 0 && l.P99 < ms(o.TargetP99), result.Ms(l.P99), "< "+result.Ms(ms(o.TargetP99)))
		res.check(p.Name+": p99.9", l.Count > 0 && l.P999 < ms(o.TargetP999), result.Ms(l.P999), "< "+result.Ms(ms(o.TargetP999)))
	}

	switch o.Scenario {
	case "churn":
		res.check("clients reconnected", readers.Resumes > 0, fmt.Sprint(readers.Resumes, " resumes"), "> 0")
		res.check("every resume served from the ring", readers.Resyncs == 0,
			fmt.Sprint(readers.Resyncs, " initial_data instead"), "0")
	case "flood":
		if f := res.Flood; f != nil {
			res.check("flood: no line refused", f.Errors == 0, fmt.Sprint(f.Errors, " errors"), "0")
			res.check("flood: every producer served", f.MinAcked > 0, fmt.Sprint(f.MinAcked, " lines at least"), "> 0")
			res.check("flood: producers paced fairly", 2*f.MinAcked >= f.MaxAcked,
				fmt.Sprintf("%d to %d lines per producer", f.MinAcked, f.MaxAcked), "least ≥ half the most")
		}
	case "slow-consumers":
		base, slow := r.phaseNamed("baseline"), r.phaseNamed("slow")
		if base != nil && slow != nil {
			limit := slowTolerance(base.Latency.P99)
			res.check("readers' p99 unmoved by slow consumers", slow.Latency.P99 <= limit,
				fmt.Sprintf("%s (baseline %s)", result.Ms(slow.Latency.P99), result.Ms(base.Latency.P99)), "≤ "+result.Ms(limit))
		}
		if s := res.Accounting["slow"]; s != nil {
			res.check("slow clients: every frame delivered or conflated", s.Lost == 0 && s.Dups == 0,
				fmt.Sprintf("%d lost, %d dups, %d conflations", s.Lost, s.Dups, s.Resyncs), "0 lost")
		}
	}
}

func (r *runner) phaseNamed(name string) *result.Phase {
	for _, p := range r.res.Phases {
		if p.Name == name {
			return p
		}
	}
	return nil
}
