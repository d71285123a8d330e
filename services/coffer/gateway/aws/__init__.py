"""The AWS-protocol endpoint of the gateway (issue 10): AWS JSON 1.1 for Secrets Manager
(``secretsmanager.*``) and KMS (``TrentService.*``), and STS's query protocol, over HTTPS, signed with SigV4,
served through the same operations (``coffer.gateway.servicer.Operation``), authorization and audit as the
gRPC API."""
