package search

import (
	"fmt"
	"strconv"
	"time"
)

// dateRange is the half-open interval [lo, hi) that a FHIR date, dateTime,
// instant or Period stands for. Open ends are minTime and maxTime.
type dateRange struct{ lo, hi time.Time }

var (
	minTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// parseDateRange turns a FHIR date/dateTime/instant into the range its
// precision covers: "2013" is the whole year, "2013-01-14T10:00" one minute.
// A time without a zone is taken as UTC, as is a date.
func parseDateRange(s string) (dateRange, error) {
	m, ok := matchDateTime(s)
	if !ok {
		return dateRange{}, fmt.Errorf("%q is not a FHIR date or dateTime", s)
	}
	num := func(i, def int) int {
		if m[i] == "" {
			return def
		}
		n, _ := strconv.Atoi(m[i])
		return n
	}
	year, month, day := num(1, 0), num(2, 1), num(3, 1)
	hour, minute, sec := num(4, 0), num(5, 0), num(6, 0)
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hour > 23 || minute > 59 || sec > 60 {
		return dateRange{}, fmt.Errorf("%q is not a valid date", s)
	}
	if sec == 60 { // a leap second is the last instant of its minute
		sec = 59
	}
	loc := time.UTC
	if z := m[8]; z != "" && z != "Z" {
		zh, _ := strconv.Atoi(z[1:3])
		zm, _ := strconv.Atoi(z[4:6])
		if zh > 14 || zm > 59 {
			return dateRange{}, fmt.Errorf("%q has an invalid time zone", s)
		}
		offset := zh*3600 + zm*60
		if z[0] == '-' {
			offset = -offset
		}
		loc = time.FixedZone(z, offset)
	}
	nanos := 0
	if frac := m[7]; frac != "" {
		n, _ := strconv.Atoi(frac)
		for i := len(frac); i < 9; i++ {
			n *= 10
		}
		nanos = n
	}
	lo := time.Date(year, time.Month(month), day, hour, minute, sec, nanos, loc)
	var hi time.Time
	switch {
	case m[2] == "":
		hi = lo.AddDate(1, 0, 0)
	case m[3] == "":
		hi = lo.AddDate(0, 1, 0)
	case m[4] == "":
		hi = lo.AddDate(0, 0, 1)
	case m[6] == "":
		hi = lo.Add(time.Minute)
	case m[7] == "":
		hi = lo.Add(time.Second)
	default:
		step := time.Duration(1)
		for i := len(m[7]); i < 9; i++ {
			step *= 10
		}
		hi = lo.Add(step)
	}
	return dateRange{lo: lo.UTC(), hi: hi.UTC()}, nil
}

// matchDateTime matches s against the FHIR date, dateTime and instant
// formats and, for search values, a time without seconds
// (2013-01-14T10:00): the groups of the regular expression
// dateTimePattern (daterange_test.go), "" for one that did not take
// part; ok is false where it does not match. Without the regular
// expression engine, which took 1 µs of each date a store indexes (two or
// more per resource). TestMatchDateTimeIsThePattern compares the two.
func matchDateTime(s string) (m [9]string, ok bool) {
	digits := func(i, n int) bool {
		if i+n > len(s) {
			return false
		}
		for _, c := range []byte(s[i : i+n]) {
			if c < '0' || c > '9' {
				return false
			}
		}
		return true
	}
	if !digits(0, 4) {
		return m, false
	}
	m[0], m[1] = s, s[:4]
	i := 4
	// -MM, -DD
	for g := 2; g <= 3; g++ {
		if i == len(s) {
			return m, true
		}
		if s[i] != '-' || !digits(i+1, 2) {
			return m, false
		}
		m[g] = s[i+1 : i+3]
		i += 3
	}
	if i == len(s) {
		return m, true
	}
	// Thh:mm
	if s[i] != 'T' || !digits(i+1, 2) || i+3 >= len(s) || s[i+3] != ':' || !digits(i+4, 2) {
		return m, false
	}
	m[4], m[5] = s[i+1:i+3], s[i+4:i+6]
	i += 6
	// :ss, .fraction
	if i < len(s) && s[i] == ':' {
		if !digits(i+1, 2) {
			return m, false
		}
		m[6] = s[i+1 : i+3]
		i += 3
		if i < len(s) && s[i] == '.' {
			j := i + 1
			for j < len(s) && j-i-1 < 9 && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			if j == i+1 {
				return m, false
			}
			m[7] = s[i+1 : j]
			i = j
		}
	}
	// Z or ±hh:mm
	if i < len(s) {
		switch {
		case s[i] == 'Z':
			m[8] = "Z"
			i++
		case (s[i] == '+' || s[i] == '-') && digits(i+1, 2) && i+3 < len(s) && s[i+3] == ':' && digits(i+4, 2):
			m[8] = s[i : i+6]
			i += 6
		}
	}
	return m, i == len(s)
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// dateRangesOf returns the ranges a node of a date parameter covers:
// one for a date, dateTime, instant or Period, one per event (and the
// bounds) for a Timing, none for anything else.
func dateRangesOf(v any) []dateRange {
	switch v := v.(type) {
	case string:
		if r, err := parseDateRange(v); err == nil {
			return []dateRange{r}
		}
	case map[string]any:
		if _, isPeriod := v["start"]; isPeriod || v["end"] != nil {
			return periodRange(v)
		}
		var out []dateRange
		if events, ok := v["event"].([]any); ok {
			for _, e := range events {
				out = append(out, dateRangesOf(e)...)
			}
		}
		if repeat, ok := v["repeat"].(map[string]any); ok {
			if bounds, ok := repeat["boundsPeriod"].(map[string]any); ok {
				out = append(out, periodRange(bounds)...)
			}
		}
		return out
	}
	return nil
}

// periodRange is the range of a Period; a missing start or end is open.
func periodRange(p map[string]any) []dateRange {
	r := dateRange{lo: minTime, hi: maxTime}
	if s, ok := p["start"].(string); ok {
		start, err := parseDateRange(s)
		if err != nil {
			return nil
		}
		r.lo = start.lo
	}
	if s, ok := p["end"].(string); ok {
		end, err := parseDateRange(s)
		if err != nil {
			return nil
		}
		r.hi = end.hi
	}
	return []dateRange{r}
}
