// Node ws echo server for benchmarks: the seed's server.js without the per-message log
// (a log line per message would measure the terminal, not ws). Usage: node node_echo.js PORT
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ port: Number(process.argv[2] || 8010), host: '127.0.0.1' });
wss.on('listening', () => console.log('Listening on port %d', wss.address().port));
wss.on('connection', (ws) => {
  ws.on('message', (message, isBinary) => {
    ws.send(isBinary ? message : 'Server received from client: ' + message, { binary: isBinary });
  });
});
