package tenancy

import (
	"fmt"
	"time"
)

// Account is a person as the gateway knows them: one token identity.
type Account struct {
	// ID is random and immutable (see NewID).
	ID string
	// Issuer and Subject are the token's iss and sub claims, compared
	// exactly as they appear in the token.
	Issuer, Subject string
	// Created is when the account was first seen.
	Created time.Time
}

// Limits on identity claims, so a token cannot bloat the store. OpenID
// Connect caps sub at 255 ASCII characters; issuers are URLs.
const (
	MaxIssuerLength  = 2048
	MaxSubjectLength = 1024
)

// validateIdentity checks an (iss, sub) pair.
func validateIdentity(iss, sub string) error {
	if iss == "" || sub == "" {
		return fmt.Errorf("%w identity: issuer and subject must not be empty", ErrInvalid)
	}
	if len(iss) > MaxIssuerLength || len(sub) > MaxSubjectLength {
		return fmt.Errorf("%w identity: issuer longer than %d or subject longer than %d bytes", ErrInvalid, MaxIssuerLength, MaxSubjectLength)
	}
	return nil
}

// Membership gives an account a role in a record.
type Membership struct {
	RecordID, AccountID string
	Role                Role
	// Created is when the account first became a member; a role change
	// keeps it.
	Created time.Time
}
