package tenancy

// Member returns, in tx, the account of (iss, sub) and its membership in
// the record: the one lookup of "the role of (iss, sub) in a record" (the
// FHIR pipeline, the management API and the authorization server's
// consent page all ask it). ErrNotFound when (iss, sub) has no account or
// the account is not a member of the record; the account is returned
// whenever it exists. It does not look at the record's Status.
func Member(tx Tx, recordID, iss, sub string) (*Account, *Membership, error) {
	acct, err := tx.AccountByIdentity(iss, sub)
	if err != nil {
		return nil, nil, err
	}
	m, err := tx.Membership(recordID, acct.ID)
	if err != nil {
		return acct, nil, err
	}
	return acct, m, nil
}
