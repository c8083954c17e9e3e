// Watches the wallboard in headless Chromium over the DevTools protocol (a pipe: no npm packages,
// no debugging port). Loads the page once, never reloads it, and prints one line per change:
//   STATE {json}   what the page shows (per center: the KPI texts; agents by state; load marker)
//   SHOT <file> [<file>]  a screenshot taken just after that state (and one of <center>'s card)
// Ends (closing Chromium and removing its profile) when stdin closes or after <seconds>.
// Usage: node watch.mjs <chromium> <url> <outdir> <seconds> [<center>]
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [chrome, url, outDir, seconds, center] = process.argv.slice(2);
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "wallboard-chromium-"));
const child = spawn(
  chrome,
  [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--user-data-dir=${profile}`, "--remote-debugging-pipe", "--window-size=1600,900",
    "about:blank",
  ],
  { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] },
);
const toChrome = child.stdio[3];
const fromChrome = child.stdio[4];
let nextId = 0;
const pending = new Map();
let buf = "";
fromChrome.on("data", (d) => {
  buf += d.toString();
  let i;
  while ((i = buf.indexOf("\0")) >= 0) {
    const msg = JSON.parse(buf.slice(0, i));
    buf = buf.slice(i + 1);
    const p = msg.id && pending.get(msg.id);
    if (p) {
      pending.delete(msg.id);
      if (msg.error) p.reject(new Error(JSON.stringify(msg.error)));
      else p.resolve(msg.result);
    }
  }
});
function send(method, params = {}, sessionId) {
  const m = { id: ++nextId, method, params };
  if (sessionId) m.sessionId = sessionId;
  return new Promise((resolve, reject) => {
    pending.set(m.id, { resolve, reject });
    toChrome.write(JSON.stringify(m) + "\0");
  });
}

let done = false;
async function finish(code) {
  if (done) return;
  done = true;
  try { await Promise.race([send("Browser.close"), new Promise((r) => setTimeout(r, 2000))]); } catch (_) {}
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    try { child.kill("SIGKILL"); } catch (_) {}
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  }
  // Chromium's helpers may still be writing their last files for a moment.
  try { fs.rmSync(profile, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 }); } catch (e) {
    console.error("could not remove " + profile + ": " + e.message);
  }
  process.exit(code);
}
process.stdin.on("end", () => finish(0));
process.stdin.resume();
setTimeout(() => finish(0), Number(seconds) * 1000);
child.on("exit", () => { if (!done) { console.log("ERROR chromium exited"); finish(1); } });

// What the page shows, read from the DOM the page's own script keeps up to date.
const READ = `(() => {
  window.__wallboardLoad = window.__wallboardLoad || String(Math.random());
  const centers = {};
  for (const s of document.querySelectorAll("section[data-center]")) {
    const c = {};
    for (const k of s.querySelectorAll("[data-kpi]")) c[k.dataset.kpi] = k.querySelector(".v").textContent;
    for (const a of s.querySelectorAll("[data-agents]")) c["agents_" + a.dataset.agents] = a.textContent;
    centers[s.dataset.center] = c;
  }
  return JSON.stringify({
    load: window.__wallboardLoad,
    navigations: performance.getEntriesByType("navigation").length,
    status: document.getElementById("status").textContent.split(" ")[0],
    emergency: document.getElementById("em-total").textContent,
    centers,
  });
})()`;

try {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  await send("Page.enable", {}, sessionId);
  await send("Page.navigate", { url }, sessionId);
  let last = "";
  let shots = 0;
  while (!done) {
    const r = await send("Runtime.evaluate", { expression: READ, returnByValue: true }, sessionId);
    const state = r.result.value;
    // The status line carries a clock; compare what matters.
    const key = state && JSON.stringify({ ...JSON.parse(state), status: undefined });
    if (state && key !== last) {
      last = key;
      console.log("STATE " + state);
      if (shots < 50) {
        const shot = await send("Page.captureScreenshot", { format: "png" }, sessionId);
        const n = String(shots++).padStart(2, "0");
        const file = path.join(outDir, `wallboard-${n}.png`);
        fs.writeFileSync(file, Buffer.from(shot.data, "base64"));
        let line = "SHOT " + file;
        if (center) {
          const rect = await send("Runtime.evaluate", {
            expression: `(() => { const r = document.querySelector('section[data-center="${center}"]').getBoundingClientRect();
              return JSON.stringify({ x: r.x, y: r.y, width: r.width, height: r.height, scale: 1 }); })()`,
            returnByValue: true,
          }, sessionId);
          const clip = JSON.parse(rect.result.value);
          const card = await send("Page.captureScreenshot", { format: "png", clip }, sessionId);
          const cardFile = path.join(outDir, `${center}-${n}.png`);
          fs.writeFileSync(cardFile, Buffer.from(card.data, "base64"));
          line += " " + cardFile;
        }
        console.log(line);
      }
    }
    await new Promise((r) => setTimeout(r, 250));
  }
} catch (e) {
  console.log("ERROR " + e.message);
  finish(1);
}
