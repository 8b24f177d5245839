// freelong-bench report: one clock per prompt section, and sortable tables. No dependencies.
"use strict";

// A prompt section's videos follow its longest video (the lead) to within half a frame while playing;
// pausing, stepping and scrubbing put every video on the same frame (frame k shown at time (k + 0.5) / fps).
function SyncGroup(section) {
  const videos = Array.from(section.querySelectorAll("video"));
  const fps = Number(section.dataset.fps);
  const frames = Number(section.dataset.frames);
  const button = section.querySelector(".play");
  const scrub = section.querySelector(".scrub");
  const label = section.querySelector(".frame-no");
  const loop = section.querySelector(".loop");
  const lead = videos.reduce((a, b) => (Number(b.dataset.frames) > Number(a.dataset.frames) ? b : a));
  const lastTime = (v) => (Number(v.dataset.frames) - 0.5) / Number(v.dataset.fps);
  const frameOf = (t) => Math.max(0, Math.min(frames - 1, Math.floor(t * fps + 1e-6)));
  let playing = false;

  function show(frame) {
    scrub.value = frame;
    label.textContent = `frame ${frame} / ${frames - 1}`;
  }
  function seek(frame) {
    frame = Math.max(0, Math.min(frames - 1, frame));
    const t = (frame + 0.5) / fps;
    for (const v of videos) v.currentTime = Math.min(t, lastTime(v));
    show(frame);
  }
  function tick() {
    if (!playing) return;
    const t = lead.currentTime;
    for (const v of videos) {
      if (v === lead || v.ended) continue;
      const want = Math.min(t, lastTime(v));
      if (Math.abs(v.currentTime - want) > 0.5 / fps) v.currentTime = want;
    }
    show(frameOf(t));
    requestAnimationFrame(tick);
  }
  function playAll() {
    for (const v of videos) v.play().catch((err) => console.warn("play() refused:", err.message));
  }
  function start() {
    if (frameOf(lead.currentTime) >= frames - 1) seek(0);
    playing = true;
    button.textContent = "Pause";
    playAll();
    requestAnimationFrame(tick);
  }
  function stop() {
    playing = false;
    for (const v of videos) v.pause();
    seek(frameOf(lead.currentTime));
    button.textContent = "Play";
  }

  button.addEventListener("click", () => (playing ? stop() : start()));
  for (const b of section.querySelectorAll(".step")) {
    b.addEventListener("click", () => {
      if (playing) stop();
      seek(Number(scrub.value) + Number(b.dataset.step));
    });
  }
  scrub.addEventListener("input", () => {
    if (playing) stop();
    seek(Number(scrub.value));
  });
  lead.addEventListener("ended", () => {
    if (!playing) return;
    if (loop.checked) {
      seek(0);
      playAll();
    } else {
      stop();
    }
  });
  section.querySelector(".strip-toggle").addEventListener("change", (e) => {
    section.classList.toggle("show-strip", e.target.checked);
  });
  for (const img of section.querySelectorAll(".strip img")) {
    const v = img.closest("figure").querySelector("video");
    img.addEventListener("click", () => {
      if (playing) stop();
      seek(Math.floor(((Number(img.dataset.frame) + 0.5) / Number(v.dataset.fps)) * fps));
    });
  }
  seek(0);
}

// Click a header to sort by that column (numbers numerically, text alphabetically; empty cells last).
function sortable(table) {
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((th, col) => {
    th.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      for (const h of headers) h.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const key = (tr) => tr.cells[col].dataset.value;
      const numeric = rows.every((r) => key(r) === "" || !Number.isNaN(Number(key(r))));
      rows.sort((a, b) => {
        const x = key(a);
        const y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        const c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? c : -c;
      });
      for (const r of rows) body.appendChild(r);
    });
  });
}

document.querySelectorAll("section.prompt").forEach(SyncGroup);
document.querySelectorAll("table.sortable").forEach(sortable);
