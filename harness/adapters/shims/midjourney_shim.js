// The npm `midjourney` client under gateway-harness, configured the way ChatGPT-Midjourney
// v3.2.x configured it (app/core/midjourney.ts, MidjourneyApi.start()):
//   new Midjourney({ServerId, ChannelId, SalaiToken, Debug: true, Ws: true,
//                   DiscordBaseUrl: MJ_DISCORD_PROXY, WsBaseUrl: MJ_DISCORD_WSS_PROXY,
//                   ImageProxy: MJ_DISCORD_CDN_PROXY + '/'}); await client.init();
// MJ_DISCORD_PROXY is the REST origin (the library adds /api/v9/...), MJ_DISCORD_WSS_PROXY the
// bare gateway URL it uses verbatim for every (re)connect. TLS trusts the harness CA through
// NODE_EXTRA_CA_CERTS. The host application (a Next.js server) survives errors the library does
// not handle, so this shim logs uncaught exceptions and keeps running, as the app did.
//
// Observation only: dispatches are logged by wrapping WsMessage.prototype.parseMessage, and the
// library's Debug log ("heartbeat N", "open.time N") becomes JSON events on stdout.
'use strict';
const { Midjourney, WsMessage } = require('midjourney');
const { version } = require('midjourney/package.json');
const { GATEWAY_URL, REST_URL, TOKEN, emit, announce, DeliveryLog } = require('./_shim_common.js');

const log = new DeliveryLog();
process.on('uncaughtException', (error) => {
  process.stderr.write(`uncaughtException: ${error.stack || error}\n`);
  emit({ event: 'uncaught', code: error.code || null, message: String(error.message || error) });
});
process.on('unhandledRejection', (error) => {
  process.stderr.write(`unhandledRejection: ${(error && error.stack) || error}\n`);
});
// The host app's HTTP server keeps Node's event loop alive whatever the gateway client does;
// without this, a client that has given up would let the process exit instead of going silent.
setInterval(() => {}, 1 << 30);

const parseMessage = WsMessage.prototype.parseMessage;
WsMessage.prototype.parseMessage = function (data) {
  try { log.payload(JSON.parse(data)); } catch (e) { /* the library will throw on it itself */ }
  return parseMessage.call(this, data);
};
WsMessage.prototype.log = async function (...args) {
  const text = args.map(String).join(' ');
  if (/^event [A-Z_]+$/.test(text)) return; // one per dispatch: the delivery log has them
  process.stderr.write(`${new Date().toISOString()} ${text}\n`);
  const m = /^(heartbeat|open\.time) (\d+)$/.exec(text);
  if (m) emit({ event: m[1] === 'heartbeat' ? 'heartbeat' : 'open', n: Number(m[2]) });
};

announce('midjourney', version);
const client = new Midjourney({
  ServerId: process.env.MJ_SERVER_ID || '1100000000000000001',
  ChannelId: process.env.MJ_CHANNEL_ID || '1100000000000000002',
  SalaiToken: TOKEN,
  Debug: true,
  Ws: true,
  DiscordBaseUrl: REST_URL.replace(/\/api\/v10$/, ''),
  WsBaseUrl: GATEWAY_URL,
  ImageProxy: 'https://cdn.discordapp.com/',
});
client.init().then(
  () => emit({ event: 'init_done' }),
  (error) => {
    // Licoy's start() logged this and left the app running without a client.
    process.stderr.write(`midjourney init failed: ${error.stack || error}\n`);
    emit({ event: 'init_failed', message: String(error.message || error) });
  },
);
