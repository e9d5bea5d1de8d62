'use strict';
// gateway-harness preload for an unmodified Node.js app (issue 18), loaded with
// NODE_OPTIONS="--require <this file>". When GATEWAY_HARNESS_REDIRECT holds a JSON object
// {"hostname or *.domain": [host, port]}, connections to those names land on the harness's
// address and port; TLS keeps the original name (undici, https and ws pass it as servername,
// and tls.connect checks the certificate against options.host, which is left alone).
// Without the variable nothing is patched. Plain CommonJS, no dependencies.
// Limits: harness/adapters/app/__init__.py.

(function gatewayHarnessRedirect() {
  const ENV = 'GATEWAY_HARNESS_REDIRECT';
  const ENV_LOG = 'GATEWAY_HARNESS_REDIRECT_LOG';
  const raw = process.env[ENV];
  if (!raw) return;

  const net = require('net');
  const dns = require('dns');
  const fs = require('fs');

  function log(event, fields) {
    const path = process.env[ENV_LOG];
    if (!path) return;
    const record = Object.assign({ runtime: 'node', pid: process.pid, event }, fields);
    try {
      fs.appendFileSync(path, JSON.stringify(record) + '\n');
    } catch (e) {
      // the log is a diagnostic: never break the app over it
    }
  }

  const table = new Map();
  try {
    const data = JSON.parse(raw);
    if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new Error('not an object');
    for (const [name, to] of Object.entries(data)) {
      const port = Number(to[1]);
      if (typeof to[0] !== 'string' || !Number.isInteger(port)) throw new Error(`bad target for ${name}`);
      table.set(name.toLowerCase().replace(/\.$/, ''), [to[0], port]);
    }
  } catch (e) {
    // Going on unpatched would send the app, with its real token, to the real Discord.
    process.stderr.write(`gateway-harness: ${ENV} is not a JSON object of hostname -> ` +
      `[host, port] (${e.message}); stopping so the app cannot reach Discord\n`);
    process.exit(2);
  }

  const logged = new Set();
  function target(host, via) {
    if (typeof host !== 'string') return null;
    const name = host.toLowerCase().replace(/\.$/, '');
    let hit = table.get(name);
    const dot = name.indexOf('.');
    if (hit === undefined && dot > 0) hit = table.get('*' + name.slice(dot)); // one label, as in a certificate
    if (hit === undefined) return null;
    if (!logged.has(name + ' ' + via)) {
      logged.add(name + ' ' + via);
      log('redirect', { host: name, to: hit, via });
    }
    return hit;
  }

  // net.connect, net.createConnection, tls.connect (so https, undici/fetch and ws) all end in
  // Socket.prototype.connect with {host, port}: one patch there covers them, port included.
  const realConnect = net.Socket.prototype.connect;
  net.Socket.prototype.connect = function connect(...args) {
    let normalized;
    if (Array.isArray(args[0])) normalized = args[0]; // already normalized by net.connect
    else if (typeof net._normalizeArgs === 'function') normalized = net._normalizeArgs(args);
    else normalized = [typeof args[0] === 'object' && args[0] !== null ? args[0] : {}, null];
    const options = normalized[0] || {};
    const hit = options.path == null ? target(options.host, 'net.Socket.connect') : null;
    if (hit === null) return realConnect.apply(this, args);
    const redirected = Object.assign({}, options, { host: hit[0], port: hit[1] });
    const callback = normalized[1];
    return typeof callback === 'function'
      ? realConnect.call(this, redirected, callback)
      : realConnect.call(this, redirected);
  };

  // For apps that resolve first and connect to the address: no port here, but the name lands on
  // the harness's host rather than on Discord.
  const realLookup = dns.lookup;
  dns.lookup = function lookup(hostname, ...rest) {
    const hit = target(hostname, 'dns.lookup');
    return realLookup.call(this, hit === null ? hostname : hit[0], ...rest);
  };
  const realPromisesLookup = dns.promises.lookup;
  dns.promises.lookup = function lookup(hostname, ...rest) {
    const hit = target(hostname, 'dns.promises.lookup');
    return realPromisesLookup.call(this, hit === null ? hostname : hit[0], ...rest);
  };

  log('loaded', { node: process.version });
})();
