// Package cron parses cron expressions and computes their next time in a time zone, with stated semantics for
// the days on which daylight saving time starts or ends. It is the taskqueue's own parser (docs/periodic.md says
// why: robfig/cron/v3 is unmaintained since 2020, gocron v2 is built on it, and the part a scheduler needs is
// small enough to own and fuzz).
//
// An expression has five fields (minute hour day-of-month month day-of-week) or six (a seconds field first):
//
//	field         values             names
//	second        0-59
//	minute        0-59
//	hour          0-23
//	day of month  1-31
//	month         1-12               jan-dec
//	day of week   0-7 (0 and 7 Sun)  sun-sat
//
// A field is a comma-separated list of items; an item is "*" (every value), a value, a range "a-b", each of
// them optionally followed by "/step" ("a/step" means a to the field's maximum); "?" is "*" in the two day
// fields. Names are case-insensitive. The macros @yearly (@annually), @monthly, @weekly, @daily (@midnight) and
// @hourly stand for "0 0 1 1 *", "0 0 1 * *", "0 0 * * 0", "0 0 * * *" and "0 * * * *". As in Vixie cron, when
// both day fields are restricted (neither starts with "*" or "?") a day matches if either matches.
//
// Daylight saving time (see [Schedule.Next]): a wall-clock time that does not exist (skipped when clocks go
// forward) fires once, at the first instant after the gap; a wall-clock time that happens twice (clocks go back)
// fires once, at its first occurrence, unless the expression fires in every hour of the day, in which case it
// follows the absolute clock and fires in both passes.
package cron

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// MaxExprLen bounds the length of an expression.
const MaxExprLen = 256

// Schedule is a parsed cron expression in a time zone. It is immutable and safe for concurrent use.
type Schedule struct {
	sec, min, hour, dom, month, dow uint64 // bit i set: value i matches
	domStar, dowStar                bool   // the day field started with * or ?
	everyHour                       bool   // all 24 hours match
	loc                             *time.Location
}

// Error is a parse error; Field names the field at fault ("expression" for the whole).
type Error struct {
	Field  string
	Detail string
}

func (e *Error) Error() string { return "cron: " + e.Field + ": " + e.Detail }

type fieldSpec struct {
	name     string
	min, max int
	names    []string // names[i] is value min+i (for month: jan=1; for dow: sun=0)
}

var (
	fSecond = fieldSpec{name: "second", min: 0, max: 59}
	fMinute = fieldSpec{name: "minute", min: 0, max: 59}
	fHour   = fieldSpec{name: "hour", min: 0, max: 23}
	fDom    = fieldSpec{name: "day of month", min: 1, max: 31}
	fMonth  = fieldSpec{name: "month", min: 1, max: 12, names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}}
	fDow    = fieldSpec{name: "day of week", min: 0, max: 7, names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}}
)

var macros = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
	"@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

// Parse parses expr for the zone loc (nil means UTC).
func Parse(expr string, loc *time.Location) (*Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	if len(expr) > MaxExprLen {
		return nil, &Error{Field: "expression", Detail: fmt.Sprintf("longer than %d bytes", MaxExprLen)}
	}
	e := strings.TrimSpace(expr)
	if strings.HasPrefix(e, "@") {
		m, ok := macros[strings.ToLower(e)]
		if !ok {
			return nil, &Error{Field: "expression", Detail: "unknown macro " + strconv.Quote(e)}
		}
		e = m
	}
	fs := strings.Fields(e)
	if len(fs) == 5 {
		fs = append([]string{"0"}, fs...)
	}
	if len(fs) != 6 {
		return nil, &Error{Field: "expression", Detail: fmt.Sprintf("%d fields, want 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)", len(strings.Fields(e)))}
	}
	s := &Schedule{loc: loc}
	var err error
	specs := []fieldSpec{fSecond, fMinute, fHour, fDom, fMonth, fDow}
	dst := []*uint64{&s.sec, &s.min, &s.hour, &s.dom, &s.month, &s.dow}
	for i, f := range fs {
		if *dst[i], err = parseField(f, specs[i]); err != nil {
			return nil, err
		}
	}
	if s.dow&(1<<7) != 0 { // 7 is Sunday too
		s.dow = s.dow&^(1<<7) | 1
	}
	s.domStar = fs[3][0] == '*' || fs[3][0] == '?'
	s.dowStar = fs[5][0] == '*' || fs[5][0] == '?'
	s.everyHour = s.hour == 1<<24-1
	if err := s.satisfiable(); err != nil {
		return nil, err
	}
	return s, nil
}

// satisfiable refuses day-of-month and month combinations that never occur (30 February), so that Next never
// searches in vain.
func (s *Schedule) satisfiable() error {
	if s.domStar || !s.dowStar {
		return nil // every day, or a restricted day of week may match (either day field does)
	}
	maxDays := []int{31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
	for m := 1; m <= 12; m++ {
		if s.month&(1<<m) != 0 && bits.TrailingZeros64(s.dom) <= maxDays[m-1] {
			return nil
		}
	}
	return &Error{Field: "day of month", Detail: "no selected month has such a day"}
}

func parseField(f string, spec fieldSpec) (uint64, error) {
	if len(f) == 0 {
		return 0, &Error{Field: spec.name, Detail: "empty"}
	}
	var set uint64
	for item := range strings.SplitSeq(f, ",") {
		b, err := parseItem(item, spec)
		if err != nil {
			return 0, err
		}
		set |= b
	}
	return set, nil
}

func parseItem(item string, spec fieldSpec) (uint64, error) {
	bad := func(detail string) error {
		if len(item) > 32 {
			item = item[:32] + "..."
		}
		return &Error{Field: spec.name, Detail: strconv.Quote(item) + ": " + detail}
	}
	rng, stepStr, hasStep := strings.Cut(item, "/")
	step := 1
	if hasStep {
		n, err := strconv.Atoi(stepStr)
		if err != nil || n < 1 || n > spec.max-spec.min+1 {
			return 0, bad(fmt.Sprintf("step must be 1 to %d", spec.max-spec.min+1))
		}
		step = n
	}
	lo, hi := spec.min, spec.max
	switch {
	case rng == "*" || (rng == "?" && (spec.name == fDom.name || spec.name == fDow.name)):
		if spec.name == fDow.name {
			hi = 6
		}
	default:
		a, b, isRange := strings.Cut(rng, "-")
		var err error
		if lo, err = value(a, spec); err != nil {
			return 0, bad(err.Error())
		}
		switch {
		case isRange:
			if hi, err = value(b, spec); err != nil {
				return 0, bad(err.Error())
			}
			if hi < lo {
				return 0, bad("range ends before it starts")
			}
		case !hasStep:
			hi = lo
		}
	}
	var set uint64
	for v := lo; v <= hi; v += step {
		set |= 1 << v
	}
	return set, nil
}

func value(s string, spec fieldSpec) (int, error) {
	for i, n := range spec.names {
		if strings.EqualFold(s, n) {
			return spec.min + i, nil
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || len(s) > 2 || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("not a number or name")
	}
	if n < spec.min || n > spec.max {
		return 0, fmt.Errorf("out of range %d-%d", spec.min, spec.max)
	}
	return n, nil
}

// Location returns the schedule's zone.
func (s *Schedule) Location() *time.Location { return s.loc }

// searchYears bounds the search of Next: an expression that matches nothing within it has no next time.
const searchYears = 8

// dstWindow is wider than any daylight-saving shift of a real zone (at most 2 hours): civil times within it of a
// zone transition are searched on both sides.
const dstWindow = 3 * time.Hour

// Next returns the first time strictly after after at which the schedule fires, in the schedule's zone, or the
// zero time when none falls within eight years. Wall-clock times are matched in the zone:
//
//   - a wall-clock time that the zone skips (02:30 on the day clocks jump from 02:00 to 03:00) fires once, at the
//     first instant after the gap (03:00 new time); several skipped times collapse into that one instant;
//   - a wall-clock time that the zone repeats (01:30 on the day clocks fall back from 02:00 to 01:00) fires once,
//     at its first occurrence (daylight time), unless the expression fires in every hour of the day: then each
//     occurrence fires, as the absolute clock passes it.
func (s *Schedule) Next(after time.Time) time.Time {
	a := after.In(s.loc)
	start := civil(a).Truncate(time.Second)
	if nearTransition(a) {
		start = start.Add(-dstWindow)
	}
	var best time.Time
	c := start
	for range 200000 {
		c = s.nextCivil(c)
		if c.IsZero() {
			break
		}
		if !best.IsZero() && (c.Sub(civil(best.In(s.loc))) > dstWindow || !nearTransition(best.In(s.loc))) {
			break
		}
		first, second, two := s.instants(c)
		for i, t := range []time.Time{first, second} {
			if i == 1 && !two {
				break
			}
			if t.After(after) && (best.IsZero() || t.Before(best)) {
				best = t
			}
		}
	}
	if best.IsZero() {
		return best
	}
	return best.In(s.loc)
}

// nearTransition reports whether the zone changes its offset within dstWindow of t.
func nearTransition(t time.Time) bool {
	start, end := t.ZoneBounds()
	return (!start.IsZero() && t.Sub(start) < dstWindow) || (!end.IsZero() && end.Sub(t) <= dstWindow)
}

// civil returns t's wall-clock reading as a UTC time: calendar arithmetic on it knows no daylight saving.
func civil(t time.Time) time.Time {
	y, mo, d := t.Date()
	h, mi, se := t.Clock()
	return time.Date(y, mo, d, h, mi, se, t.Nanosecond(), time.UTC)
}

// instants maps a civil time (as UTC) to the instants at which it happens in the zone: one normally; for a
// skipped time the first instant after the gap; for a repeated time its first occurrence, and the second too
// (two) when the schedule fires every hour.
func (s *Schedule) instants(c time.Time) (first, second time.Time, two bool) {
	u := c.Unix()
	_, offBefore := time.Unix(u-86400, 0).In(s.loc).Zone()
	_, offAfter := time.Unix(u+86400, 0).In(s.loc).Zone()
	var valid []time.Time
	for _, off := range []int{offBefore, offAfter} {
		t := time.Unix(u-int64(off), 0).In(s.loc)
		if _, o := t.Zone(); o == off && (len(valid) == 0 || !valid[0].Equal(t)) {
			valid = append(valid, t)
		}
	}
	switch len(valid) {
	case 0: // a gap: the instant the new offset starts
		later := time.Unix(u-int64(min(offBefore, offAfter)), 0).In(s.loc)
		start, _ := later.ZoneBounds()
		return start, time.Time{}, false
	case 1:
		return valid[0], time.Time{}, false
	}
	if valid[1].Before(valid[0]) {
		valid[0], valid[1] = valid[1], valid[0]
	}
	return valid[0], valid[1], s.everyHour
}

// nextCivil returns the first matching civil time (as UTC) strictly after c, or the zero time past the search
// bound.
func (s *Schedule) nextCivil(c time.Time) time.Time {
	t := c.Truncate(time.Second).Add(time.Second)
	limit := t.Year() + searchYears
wrap:
	if t.Year() > limit {
		return time.Time{}
	}
	for s.month&(1<<uint(t.Month())) == 0 {
		t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		if t.Month() == time.January {
			goto wrap
		}
	}
	for !s.dayMatches(t) {
		t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
		if t.Day() == 1 {
			goto wrap
		}
	}
	for s.hour&(1<<uint(t.Hour())) == 0 {
		t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, time.UTC)
		if t.Hour() == 0 {
			goto wrap
		}
	}
	for s.min&(1<<uint(t.Minute())) == 0 {
		t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute()+1, 0, 0, time.UTC)
		if t.Minute() == 0 {
			goto wrap
		}
	}
	for s.sec&(1<<uint(t.Second())) == 0 {
		t = t.Add(time.Second)
		if t.Second() == 0 {
			goto wrap
		}
	}
	return t
}

func (s *Schedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<uint(t.Day())) != 0
	dow := s.dow&(1<<uint(t.Weekday())) != 0
	if s.domStar || s.dowStar {
		return dom && dow
	}
	return dom || dow
}
