package caddymodule

import (
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/pfrgateway/caddy-pfr/dopu"
)

// DropOffConfig configures DOPU, the drop-off of Bundles by senders without
// access to a record. Zero values take the defaults.
type DropOffConfig struct {
	// Refuse drop-offs: posts by callers without write access get 401/403.
	Disabled bool `json:"disabled,omitempty"`

	// Largest Bundle, as sent and inflated, in bytes. Default: 20 MiB.
	MaxBytes int64 `json:"max_bytes,omitempty"`

	// Most entries in one Bundle. Default: 10000.
	MaxEntries int `json:"max_entries,omitempty"`

	// Deepest JSON nesting. Default: 64.
	MaxDepth int `json:"max_depth,omitempty"`

	// How long a drop-off waits to be picked up. Default: 30 days.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// How long a finished drop-off's summary is kept. Default: 90 days.
	Retention caddy.Duration `json:"retention,omitempty"`

	// Most pending drop-offs per record. Default: 100.
	PendingPerRecord int `json:"pending_per_record,omitempty"`

	// Most pending bytes per record. Default: 256 MiB.
	PendingBytesPerRecord int64 `json:"pending_bytes_per_record,omitempty"`

	// Drop-offs per minute from one address (IPv6: per /64), and the
	// burst. Default: 30, burst 10. A negative rate turns the limit off.
	SourcePerMinute float64 `json:"source_per_minute,omitempty"`
	SourceBurst     int     `json:"source_burst,omitempty"`

	// Drop-offs per minute to one record, and the burst. Default: 60,
	// burst 20. A negative rate turns the limit off.
	RecordPerMinute float64 `json:"record_per_minute,omitempty"`
	RecordBurst     int     `json:"record_burst,omitempty"`

	// First delay before a failed alert is sent again; it doubles up to
	// RetryCap. Defaults: dopu's (see dopu.Options).
	RetryBase caddy.Duration `json:"retry_base,omitempty"`
	RetryCap  caddy.Duration `json:"retry_cap,omitempty"`

	// Failed deliveries after which an alert is dead: kept for the owner to
	// see in the inbox, never attempted again. A destination the webhook
	// policy refuses makes it dead at once. Default: 12.
	AlertAttempts int `json:"alert_attempts,omitempty"`

	// How often due alerts are looked for. Default: 5s.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`

	// How long a pick-up holds its drop-off. Default: 10m.
	LeaseTTL caddy.Duration `json:"lease_ttl,omitempty"`

	// How long a delivery attempt holds its alert: no other node sends it
	// meanwhile, and if this node dies the alert is due again when the
	// lease runs out. Keep it well above the webhook timeout (10s).
	// Default: 2m.
	AlertLease caddy.Duration `json:"alert_lease,omitempty"`
}

// options returns the dopu.Options these settings give, on top of base.
func (c *DropOffConfig) options(base dopu.Options) dopu.Options {
	if c == nil {
		return base
	}
	base.RetryBase, base.RetryCap = time.Duration(c.RetryBase), time.Duration(c.RetryCap)
	base.PollInterval, base.LeaseTTL = time.Duration(c.PollInterval), time.Duration(c.LeaseTTL)
	base.MaxAttempts, base.AlertLease = c.AlertAttempts, time.Duration(c.AlertLease)
	return base
}

func (c *DropOffConfig) limits() dopu.Limits {
	if c == nil {
		return dopu.Limits{}
	}
	return dopu.Limits{
		MaxBytes: c.MaxBytes, MaxEntries: c.MaxEntries, MaxDepth: c.MaxDepth,
		TTL: time.Duration(c.TTL), Retention: time.Duration(c.Retention),
		PendingPerRecord: c.PendingPerRecord, PendingBytesPerRecord: c.PendingBytesPerRecord,
		SourceRate: dopu.Rate{PerMinute: c.SourcePerMinute, Burst: c.SourceBurst},
		RecordRate: dopu.Rate{PerMinute: c.RecordPerMinute, Burst: c.RecordBurst},
	}
}

// parseDropOff parses
//
//	dropoff [off] {
//	    max_bytes                <n>
//	    max_entries              <n>
//	    max_depth                <n>
//	    ttl                      <duration>
//	    retention                <duration>
//	    pending_per_record       <n>
//	    pending_bytes_per_record <n>
//	    source_rate              <per minute> [<burst>]
//	    record_rate              <per minute> [<burst>]
//	    retry_base               <duration>
//	    retry_cap                <duration>
//	    alert_attempts           <n>
//	    poll_interval            <duration>
//	    lease_ttl                <duration>
//	    alert_lease              <duration>
//	}
func parseDropOff(d *caddyfile.Dispenser, c *DropOffConfig) error {
	if d.NextArg() {
		if d.Val() != "off" {
			return d.Errf("dropoff takes 'off' or a block, not %q", d.Val())
		}
		c.Disabled = true
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		intArg := func(i int) (int64, error) {
			n, err := strconv.ParseInt(args[i], 10, 64)
			if err != nil || n <= 0 {
				return 0, d.Errf("%s: %q is not a positive number", key, args[i])
			}
			return n, nil
		}
		var err error
		var n int64
		switch key {
		case "max_bytes":
			c.MaxBytes, err = intArg(0)
		case "max_entries":
			n, err = intArg(0)
			c.MaxEntries = int(n)
		case "max_depth":
			n, err = intArg(0)
			c.MaxDepth = int(n)
		case "pending_per_record":
			n, err = intArg(0)
			c.PendingPerRecord = int(n)
		case "pending_bytes_per_record":
			c.PendingBytesPerRecord, err = intArg(0)
		case "alert_attempts":
			n, err = intArg(0)
			c.AlertAttempts = int(n)
		case "ttl", "retention", "retry_base", "retry_cap", "poll_interval", "lease_ttl", "alert_lease":
			dur, perr := caddy.ParseDuration(args[0])
			if perr != nil || dur <= 0 {
				return d.Errf("%s: %q is not a positive duration", key, args[0])
			}
			*map[string]*caddy.Duration{
				"ttl": &c.TTL, "retention": &c.Retention, "retry_base": &c.RetryBase,
				"retry_cap": &c.RetryCap, "poll_interval": &c.PollInterval, "lease_ttl": &c.LeaseTTL,
				"alert_lease": &c.AlertLease,
			}[key] = caddy.Duration(dur)
		case "source_rate", "record_rate":
			rate, perr := strconv.ParseFloat(args[0], 64)
			if perr != nil || rate == 0 {
				return d.Errf("%s: %q is not a rate per minute (negative turns the limit off)", key, args[0])
			}
			burst := 0
			if len(args) > 1 {
				n, err = intArg(1)
				burst = int(n)
			}
			if key == "source_rate" {
				c.SourcePerMinute, c.SourceBurst = rate, burst
			} else {
				c.RecordPerMinute, c.RecordBurst = rate, burst
			}
		default:
			return d.Errf("unrecognized dropoff option '%s'", key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
