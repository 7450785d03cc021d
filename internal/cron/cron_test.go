package cron

import (
	"errors"
	"testing"
	"time"
)

func mustLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return loc
}

func TestParseErrorsNameTheField(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"":                  "expression",
		"* * * *":           "expression",
		"* * * * * * *":     "expression",
		"@fortnightly":      "expression",
		"60 * * * *":        "minute",
		"* 24 * * *":        "hour",
		"* * 0 * *":         "day of month",
		"* * * 13 *":        "month",
		"* * * * 8":         "day of week",
		"* * * foo *":       "month",
		"*/0 * * * *":       "minute",
		"5-1 * * * *":       "minute",
		"60 * * * * *":      "second",
		"0 0 30 2 *":        "day of month",
		"? * * * *":         "minute",
		"1,,2 * * * *":      "minute",
		"-1 * * * *":        "minute",
		"+1 * * * *":        "minute",
		"* * * * mon-":      "day of week",
		"0 0 31 4,6,9,11 *": "day of month",
	}
	for expr, field := range cases {
		_, err := Parse(expr, nil)
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q) = %v, want *Error", expr, err)
			continue
		}
		if pe.Field != field {
			t.Errorf("Parse(%q) names %q, want %q (%v)", expr, pe.Field, field, err)
		}
	}
}

func TestNext(t *testing.T) {
	t.Parallel()
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct{ expr, after, want string }{
		{"* * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"},
		{"* * * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"},
		{"*/15 * * * *", "2026-01-01T00:07:30Z", "2026-01-01T00:15:00Z"},
		{"30 2 * * *", "2026-01-01T02:30:00Z", "2026-01-02T02:30:00Z"},
		{"0 9 * * mon-fri", "2026-01-02T10:00:00Z", "2026-01-05T09:00:00Z"}, // Fri -> Mon
		{"0 0 1 1 *", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"@yearly", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"@hourly", "2026-06-01T00:59:59Z", "2026-06-01T01:00:00Z"},
		{"0 0 29 feb *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"0 0 13 * fri", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"}, // either day field (Vixie)
		{"0 0 * * 7", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"},    // 7 is Sunday
		{"0 0 ? * SUN", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"},
		{"5/20 * * * *", "2026-01-01T00:06:00Z", "2026-01-01T00:25:00Z"},
		{"0 12 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T12:00:00Z"},
	}
	for _, c := range cases {
		s, err := Parse(c.expr, time.UTC)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.expr, err)
		}
		if got := s.Next(utc(c.after)); !got.Equal(utc(c.want)) {
			t.Errorf("%q after %s = %s, want %s", c.expr, c.after, got.UTC().Format(time.RFC3339), c.want)
		}
	}
}

// fire lists the schedule's times after from, up to n of them or until to.
func fire(s *Schedule, from, to time.Time, n int) []time.Time {
	var out []time.Time
	for t := s.Next(from); !t.IsZero() && t.Before(to) && len(out) < n; t = s.Next(t) {
		out = append(out, t)
	}
	return out
}

func fmtAll(ts []time.Time) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Format(time.RFC3339)
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDSTSpringForward: 2027-03-14 in New York, clocks jump from 02:00 EST to 03:00 EDT; 2027-03-28 in Berlin,
// from 02:00 CET to 03:00 CEST. A daily 02:30 fires once that day, at 03:00 new time, and at 02:30 the days around.
func TestDSTSpringForward(t *testing.T) {
	t.Parallel()
	for _, z := range []struct{ zone, from, want string }{
		{"America/New_York", "2027-03-13T00:00:00-05:00", "2027-03-13T02:30:00-05:00 2027-03-14T03:00:00-04:00 2027-03-15T02:30:00-04:00"},
		{"Europe/Berlin", "2027-03-27T00:00:00+01:00", "2027-03-27T02:30:00+01:00 2027-03-28T03:00:00+02:00 2027-03-29T02:30:00+02:00"},
	} {
		loc := mustLoad(t, z.zone)
		s, err := Parse("30 2 * * *", loc)
		if err != nil {
			t.Fatal(err)
		}
		from, _ := time.Parse(time.RFC3339, z.from)
		got := fmtAll(fire(s, from, from.Add(72*time.Hour), 10))
		if want := splitWords(z.want); !equalStrings(got, want) {
			t.Errorf("%s daily 02:30: got %v, want %v", z.zone, got, want)
		}
	}
	// Every 20 minutes: 02:00, 02:20 and 02:40 do not exist; they collapse into one run at 03:00.
	loc := mustLoad(t, "America/New_York")
	s, _ := Parse("*/20 * * * *", loc)
	from, _ := time.Parse(time.RFC3339, "2027-03-14T01:30:00-05:00")
	got := fmtAll(fire(s, from, from.Add(90*time.Minute), 10))
	want := splitWords("2027-03-14T01:40:00-05:00 2027-03-14T03:00:00-04:00 2027-03-14T03:20:00-04:00 2027-03-14T03:40:00-04:00")
	if !equalStrings(got, want) {
		t.Errorf("every 20 minutes across the gap: got %v, want %v", got, want)
	}
}

// TestDSTFallBack: 2027-11-07 in New York, clocks fall back from 02:00 EDT to 01:00 EST; 2027-10-31 in Berlin,
// from 03:00 CEST to 02:00 CET. A daily time in the repeated hour fires once, at its first occurrence; a
// schedule that fires every hour fires in both passes.
func TestDSTFallBack(t *testing.T) {
	t.Parallel()
	for _, z := range []struct{ zone, expr, from, want string }{
		{"America/New_York", "30 1 * * *", "2027-11-06T00:00:00-04:00", "2027-11-06T01:30:00-04:00 2027-11-07T01:30:00-04:00 2027-11-08T01:30:00-05:00"},
		{"Europe/Berlin", "30 2 * * *", "2027-10-30T00:00:00+02:00", "2027-10-30T02:30:00+02:00 2027-10-31T02:30:00+02:00 2027-11-01T02:30:00+01:00"},
	} {
		s, err := Parse(z.expr, mustLoad(t, z.zone))
		if err != nil {
			t.Fatal(err)
		}
		from, _ := time.Parse(time.RFC3339, z.from)
		got := fmtAll(fire(s, from, from.Add(72*time.Hour), 10))
		if want := splitWords(z.want); !equalStrings(got, want) {
			t.Errorf("%s %q: got %v, want %v", z.zone, z.expr, got, want)
		}
	}
	loc := mustLoad(t, "America/New_York")
	s, _ := Parse("30 * * * *", loc)
	from, _ := time.Parse(time.RFC3339, "2027-11-07T00:00:00-04:00")
	got := fmtAll(fire(s, from, from.Add(4*time.Hour), 10))
	want := splitWords("2027-11-07T00:30:00-04:00 2027-11-07T01:30:00-04:00 2027-11-07T01:30:00-05:00 2027-11-07T02:30:00-05:00")
	if !equalStrings(got, want) {
		t.Errorf("hourly at :30 across the repeated hour: got %v, want %v", got, want)
	}
}

func splitWords(s string) []string {
	var out []string
	cur := ""
	for _, r := range s + " " {
		if r == ' ' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		cur += string(r)
	}
	return out
}

// FuzzParse: no input panics or hangs; whatever parses has a next time after the instant asked, which matches
// the expression in UTC, and successive times increase.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"* * * * *", "*/7 1-5,9 1,15 jan-jun mon-fri", "0 0 29 2 *", "@weekly", "59 59 23 31 12 7", "0 0 30 2 *", "?/3 * * * * ?"} {
		f.Add(s, int64(1_800_000_000))
	}
	ny := mustLoad(f, "America/New_York")
	f.Fuzz(func(t *testing.T, expr string, unix int64) {
		from := time.Unix(unix%(4<<30), 0)
		for _, loc := range []*time.Location{time.UTC, ny} {
			s, err := Parse(expr, loc)
			if err != nil {
				var pe *Error
				if !errors.As(err, &pe) || pe.Field == "" {
					t.Fatalf("Parse(%q): untyped error %v", expr, err)
				}
				return
			}
			prev := from
			for range 3 {
				next := s.Next(prev)
				if next.IsZero() {
					break
				}
				if !next.After(prev) {
					t.Fatalf("%q in %s: Next(%s) = %s, not after", expr, loc, prev, next)
				}
				if loc == time.UTC {
					u := next.UTC()
					if s.sec&(1<<u.Second()) == 0 || s.min&(1<<u.Minute()) == 0 || s.hour&(1<<u.Hour()) == 0 ||
						s.month&(1<<uint(u.Month())) == 0 || !s.dayMatches(u) {
						t.Fatalf("%q: Next(%s) = %s does not match", expr, prev, next)
					}
				}
				prev = next
			}
		}
	})
}
