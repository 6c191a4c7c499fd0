// Drives the official socket.io-client against a roomcast gateway.
//
//   node client-test.mjs <gateway URL> <scenario>
//
// Scenarios: default (io() as a page calls it: polling, then the upgrade),
// polling (transports: ['polling']), websocket (transports: ['websocket']), restart (prints "restart-now",
// then expects to reconnect and re-join after the gateway comes back).
// Rooms sales and visitors must be receiving updates shaped
// {"room":<room>,"n":<number>}. Prints progress lines; exits 0 on success,
// 1 with the reason on failure.
import { io } from "socket.io-client";

const [url, scenario] = process.argv.slice(2);
const log = (...a) => console.log(...a);
const fail = (why) => {
  console.error("FAIL:", why);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 30000).unref();

// next resolves with the first event value that passes test.
function next(socket, event, test = () => true) {
  return new Promise((resolve) => {
    const h = (v) => {
      if (test(v)) {
        socket.off(event, h);
        resolve(v);
      }
    };
    socket.on(event, h);
  });
}

const emitAck = (socket, event, arg) =>
  socket.timeout(5000).emitWithAck(event, arg);

function checkPayload(data, room) {
  const keys = Object.keys(data).sort().join(",");
  if (keys !== "n,room" || data.room !== room || typeof data.n !== "number") {
    fail(`update_data is not the producer's payload: ${JSON.stringify(data)}`);
  }
}

async function joinAndLeave(socket) {
  let ack = await emitAck(socket, "join", { room: "sales" });
  if (!ack.ok) fail(`join ack: ${JSON.stringify(ack)}`);
  checkPayload(await next(socket, "update_data", (d) => d.room === "sales"), "sales");
  log("joined sales, update received");

  const errorEvent = next(socket, "error");
  ack = await emitAck(socket, "join", { room: "no.such room" });
  if (ack.ok !== false || ack.error?.code !== "bad_room") fail(`bad room ack: ${JSON.stringify(ack)}`);
  const err = await errorEvent;
  if (err.code !== "bad_room") fail(`error event: ${JSON.stringify(err)}`);
  log("bad room refused");

  ack = await emitAck(socket, "join", { room: "visitors" });
  if (!ack.ok) fail(`join visitors ack: ${JSON.stringify(ack)}`);
  ack = await emitAck(socket, "leave", { room: "sales" });
  if (!ack.ok) fail(`leave ack: ${JSON.stringify(ack)}`);
  // After the leave's ack no sales update may come: watch until several
  // visitors updates have passed.
  let visitors = 0;
  await new Promise((resolve) => {
    const h = (d) => {
      if (d.room === "sales") fail("sales update after leave");
      if (++visitors === 5) {
        socket.off("update_data", h);
        resolve();
      }
    };
    socket.on("update_data", h);
  });
  log("left sales, no more sales updates");
}

async function main() {
  switch (scenario) {
    case "default": {
      const socket = io(url, { reconnection: false });
      // The engine exists as soon as io() returns; its first transport is
      // the one the handshake used.
      const first = socket.io.engine.transport.name;
      const upgraded = new Promise((r) => socket.io.engine.once("upgrade", r));
      await next(socket, "connect");
      if (first !== "polling") fail(`first transport ${first}, want polling`);
      log("connected (handshake over polling)");
      await joinAndLeave(socket);
      await upgraded;
      if (socket.io.engine.transport.name !== "websocket") fail("not upgraded");
      // Still served after the upgrade.
      checkPayload(await next(socket, "update_data"), "visitors");
      log("upgraded to websocket, updates continue");
      socket.disconnect();
      break;
    }
    case "polling": {
      const socket = io(url, { transports: ["polling"], reconnection: false });
      await next(socket, "connect");
      log("connected over polling only");
      await joinAndLeave(socket);
      socket.disconnect();
      break;
    }
    case "websocket": {
      const socket = io(url, { transports: ["websocket"], reconnection: false });
      await next(socket, "connect");
      if (socket.io.engine.transport.name !== "websocket") fail("not websocket");
      log("connected over websocket");
      await joinAndLeave(socket);
      socket.disconnect();
      break;
    }
    case "restart": {
      const socket = io(url, {
        reconnectionDelay: 100,
        reconnectionDelayMax: 500,
        randomizationFactor: 0,
      });
      // A page re-joins its rooms on every connect.
      let connects = 0;
      socket.on("connect", () => {
        connects++;
        socket.emit("join", { room: "sales" });
      });
      checkPayload(await next(socket, "update_data"), "sales");
      log("restart-now");
      await next(socket, "disconnect");
      log("disconnected");
      await next(socket, "connect");
      checkPayload(await next(socket, "update_data"), "sales");
      if (connects < 2) fail(`connects ${connects}`);
      log("reconnected and re-joined");
      socket.disconnect();
      break;
    }
    default:
      fail(`unknown scenario ${scenario}`);
  }
  process.exit(0);
}

main().catch((e) => fail(e?.stack ?? String(e)));
