// Package hapidiff holds the differential test of the embedded store
// against HAPI FHIR JPA (hapidiff_test.go): the same resources are loaded
// into both, several hundred generated searches of every parameter type,
// prefix and modifier (chains, _has, _include, _revinclude, _sort, paging)
// run on both, and the answers are compared as sets of ids (as sequences
// where _sort fixes the order). Where HAPI departs from the R4 text the
// test names the case (hapiDeviations), pins the R4 reading on a small
// example the store must follow, and accepts HAPI's other answer only for
// searches of that shape. The package has no code of its own.
package hapidiff
