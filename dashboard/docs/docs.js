// Starts Swagger UI on the gateway's own OpenAPI document. A separate file
// (not an inline script) so the page's Content-Security-Policy can forbid
// inline scripts.
'use strict';
window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: '/api/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    // The default validator badge would ask an outside service about the
    // document; nothing leaves this gateway.
    validatorUrl: null,
    tryItOutEnabled: false,
    persistAuthorization: false,
    // No "what's new" or telemetry requests.
    queryConfigEnabled: false,
    docExpansion: 'list',
    defaultModelsExpandDepth: 0,
  });
});
