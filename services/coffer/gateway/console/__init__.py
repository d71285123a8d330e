"""The web console of the gateway (issue 15): HTML pages over HTTPS on their own port
(``COFFER_CONSOLE_ADDR``), signed in with an access key pair, served through the same operations
(``coffer.gateway.servicer.Operation``), authorization and audit as the gRPC API and the AWS endpoint."""
