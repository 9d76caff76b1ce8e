package authz

import (
	"context"
	"slices"
	"time"
)

// App is a connected app of a record as its owners and managers see it:
// one grant.
type App struct {
	ClientID   string    `json:"clientId"`
	ClientName string    `json:"clientName,omitempty"`
	Redirect   []string  `json:"redirectUris,omitempty"`
	Account    string    `json:"account"`
	Issuer     string    `json:"iss"`
	Subject    string    `json:"sub"`
	Scope      []string  `json:"scope"`
	Approved   time.Time `json:"approved"`
}

// Apps lists the apps connected to a record, one entry per grant.
func (s *Server) Apps(ctx context.Context, recordID string) ([]App, error) {
	grants, err := s.cfg.Store.Grants(ctx, recordID)
	if err != nil {
		return nil, err
	}
	out := make([]App, 0, len(grants))
	for _, g := range grants {
		a := App{ClientID: g.ClientID, Account: g.AccountID, Issuer: g.Issuer, Subject: g.Subject,
			Scope: slices.Clone(g.Scope), Approved: g.Created}
		if c, err := s.cfg.Store.Client(ctx, g.ClientID); err == nil {
			a.ClientName, a.Redirect = c.Name, c.RedirectURIs
		}
		out = append(out, a)
	}
	return out, nil
}

// RevokeApp ends every grant of the record to the client: its refresh
// tokens stop at once, its access tokens at their next use. It returns
// ErrNotFound when the client had none.
func (s *Server) RevokeApp(ctx context.Context, recordID, clientID string) error {
	n, err := s.cfg.Store.RevokeGrants(ctx, recordID, clientID)
	s.status.invalidate()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteRecord forgets every grant of a deleted record.
func (s *Server) DeleteRecord(ctx context.Context, recordID string) error {
	defer s.status.invalidate()
	return s.cfg.Store.DeleteRecordGrants(ctx, recordID)
}

// Prune deletes expired requests, sessions, codes and tokens.
func (s *Server) Prune(ctx context.Context) error { return s.cfg.Store.Prune(ctx, s.cfg.Now()) }

// Run prunes every ten minutes until ctx is done.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Prune(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("pruning the authorization server's state")
			}
		}
	}
}
