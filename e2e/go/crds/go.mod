// Pins the third-party CRDs the e2e cluster installs; they are read from this module's zip in
// the Go module cache (example/prometheus-operator-crd/), nothing is built from it.
module omendb.dev/e2e/crds

go 1.23

require github.com/prometheus-operator/prometheus-operator v0.82.2
