package conformance

func limitSpecs(e *env) {}
