// Package idsmsg is the IDS message layer of the sidecar: the IDS
// Information Model message header (JSON-LD), the IDS-G multipart binding
// (a "header" part and an optional "payload" part), the IDSCP2 application
// layer (AppLayerMessage as idscp2-jvm and camel-idscp2 send it), and the
// mapping of plain HTTP requests and responses onto IDS messages and their
// extraHeaders.
//
// The wire conventions are documented for operators in docs/mapping.md.
// In short:
//
//   - A plain HTTP request travels as an IdsMessage whose header has type
//     ids:RequestMessage, its answer as ids:ResponseMessage (the type is
//     just Message.Type, so a caller may choose another); an IDS multipart
//     request keeps the client's message type; errors are
//     ids:RejectionMessage with an idsc: rejection reason.
//   - The sidecar stamps @id (if missing), ids:issued, ids:modelVersion (if
//     missing), ids:issuerConnector, ids:senderAgent and ids:securityToken
//     (its own DAT) on everything it sends (Self.Stamp); responses also get
//     ids:correlationMessage, ids:recipientConnector and ids:recipientAgent
//     (NewResponse).
//   - HTTP method, path, query and status travel in extraHeaders under the
//     names Apache Camel's HTTP components use (CamelHttpMethod,
//     CamelHttpPath, CamelHttpQuery, CamelHttpResponseCode); a fixed
//     allow-list of end-to-end headers travels under canonical header names.
//     Credentials, cookies and hop-by-hop headers never do.
//
// Nothing in this package does I/O beyond the io.Reader and io.Writer it is
// given; size limits on IDS headers are the caller's, size limits on
// multipart bodies are ReadMultipart's maxBytes.
package idsmsg
