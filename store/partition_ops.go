package store

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// parameters is the subset of the Parameters resource the partition
// operations read and write.
type parameters struct {
	ResourceType string      `json:"resourceType"`
	Parameter    []parameter `json:"parameter"`
}

type parameter struct {
	Name         string      `json:"name"`
	ValueInteger *int64      `json:"valueInteger,omitempty"`
	ValueCode    *string     `json:"valueCode,omitempty"`
	ValueString  *string     `json:"valueString,omitempty"`
	Part         []parameter `json:"part,omitempty"`
}

// requireDefaultPartition enforces HAPI's rule that partition management is
// called on the DEFAULT partition.
func (q *request) requireDefaultPartition(op string) error {
	if q.part != defaultPartitionKey {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeBusinessRule,
			"%s must be called with header %s: %s", op, q.h.cfg.PartitionHeader, defaultPartitionName)
	}
	return nil
}

// readParameters reads a Parameters body.
func (q *request) readParameters() (*parameters, error) {
	body, err := readBody(q.w, q.r)
	if err != nil {
		return nil, err
	}
	var p parameters
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "invalid Parameters body: %v", err)
	}
	if p.ResourceType != "Parameters" {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "expected a Parameters resource, got %q", p.ResourceType)
	}
	return &p, nil
}

// partitionFromParameters reads id, name and description.
func partitionFromParameters(ps *parameters) (partitionInfo, error) {
	var p partitionInfo
	var haveID bool
	for _, x := range ps.Parameter {
		switch x.Name {
		case "id":
			if x.ValueInteger == nil {
				return p, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "parameter id must be a valueInteger")
			}
			p.ID, haveID = *x.ValueInteger, true
		case "name":
			switch {
			case x.ValueCode != nil:
				p.Name = *x.ValueCode
			case x.ValueString != nil:
				p.Name = *x.ValueString
			default:
				return p, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "parameter name must be a valueCode")
			}
		case "description":
			if x.ValueString == nil {
				return p, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "parameter description must be a valueString")
			}
			p.Description = *x.ValueString
		}
	}
	if !haveID {
		return p, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "Partition must have an ID and a Name: parameter id is missing")
	}
	if p.Name == "" {
		return p, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "Partition must have an ID and a Name: parameter name is missing")
	}
	return p, nil
}

// partitionParameters renders a partition as Parameters, as HAPI answers.
func partitionParameters(p partitionInfo) *parameters {
	id, name := p.ID, p.Name
	out := &parameters{ResourceType: "Parameters", Parameter: []parameter{
		{Name: "id", ValueInteger: &id},
		{Name: "name", ValueCode: &name},
	}}
	if p.Description != "" {
		d := p.Description
		out.Parameter = append(out.Parameter, parameter{Name: "description", ValueString: &d})
	}
	return out
}

// createPartitionOp answers $partition-management-create-partition.
func (q *request) createPartitionOp() error {
	if err := q.requireDefaultPartition("$partition-management-create-partition"); err != nil {
		return err
	}
	ps, err := q.readParameters()
	if err != nil {
		return err
	}
	p, err := partitionFromParameters(ps)
	if err != nil {
		return err
	}
	if err := q.h.db.bolt.Update(func(tx *bolt.Tx) error { return createPartition(tx, p) }); err != nil {
		return err
	}
	fhir.WriteJSON(q.w, http.StatusOK, partitionParameters(p))
	return nil
}

// deletePartitionOp answers $partition-management-delete-partition: the
// partition and all its data are gone when it answers 200.
func (q *request) deletePartitionOp() error {
	if err := q.requireDefaultPartition("$partition-management-delete-partition"); err != nil {
		return err
	}
	ps, err := q.readParameters()
	if err != nil {
		return err
	}
	var id *int64
	for _, x := range ps.Parameter {
		if x.Name == "id" {
			id = x.ValueInteger
		}
	}
	if id == nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "parameter id (valueInteger) is required")
	}
	var p partitionInfo
	end := q.h.db.beginWrite(partitionKey(*id))
	err = q.h.db.bolt.Update(func(tx *bolt.Tx) error {
		p, err = deletePartition(tx, *id)
		return err
	})
	end()
	if err != nil {
		return err
	}
	q.h.db.dropSnapshotsOf(partitionKey(*id))
	fhir.WriteJSON(q.w, http.StatusOK, fhir.NewOutcome(fhir.SeverityInformation, fhir.CodeInformational,
		fmt.Sprintf("Partition %d (%s) deleted with all its data", p.ID, p.Name)))
	return nil
}

// listPartitionsOp answers $partition-management-list-partitions.
func (q *request) listPartitionsOp() error {
	if err := q.requireDefaultPartition("$partition-management-list-partitions"); err != nil {
		return err
	}
	var list []partitionInfo
	err := q.h.db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		list, err = listPartitions(tx)
		return err
	})
	if err != nil {
		return err
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	out := &parameters{ResourceType: "Parameters", Parameter: []parameter{}}
	for _, p := range list {
		out.Parameter = append(out.Parameter, parameter{Name: "partition", Part: partitionParameters(p).Parameter})
	}
	fhir.WriteJSON(q.w, http.StatusOK, out)
	return nil
}

// readPartitionOp answers $partition-management-read-partition: parameter
// id in a Parameters body (POST) or the query (GET).
func (q *request) readPartitionOp() error {
	if err := q.requireDefaultPartition("$partition-management-read-partition"); err != nil {
		return err
	}
	var id int64
	if q.r.Method == http.MethodPost {
		ps, err := q.readParameters()
		if err != nil {
			return err
		}
		found := false
		for _, x := range ps.Parameter {
			if x.Name == "id" && x.ValueInteger != nil {
				id, found = *x.ValueInteger, true
			}
		}
		if !found {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "parameter id (valueInteger) is required")
		}
	} else {
		n, err := strconv.ParseInt(q.r.URL.Query().Get("id"), 10, 64)
		if err != nil {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "parameter id (an integer) is required")
		}
		id = n
	}
	var p partitionInfo
	err := q.h.db.bolt.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketPartitions).Get([]byte(partitionKey(id)))
		if raw == nil {
			return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "No partition exists with ID %d", id)
		}
		return json.Unmarshal(raw, &p)
	})
	if err != nil {
		return err
	}
	fhir.WriteJSON(q.w, http.StatusOK, partitionParameters(p))
	return nil
}
