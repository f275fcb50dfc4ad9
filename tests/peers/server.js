// The seed's server.js, unchanged but for two things a test needs: the port comes from
// argv (0 picks a free one) and the bound port is printed once listening.
console.log("Server started");
var Msg = '';
var WebSocketServer = require('ws').Server
  , wss = new WebSocketServer({port: Number(process.argv[2] || 8010)});
wss.on('listening', function() { console.log('Listening on port %d', wss.address().port); });
wss.on('connection', function(ws) {
  ws.on('message', function(message) {
    console.log('Received from client: %s', message);
    ws.send('Server received from client: ' + message);
  });
});
