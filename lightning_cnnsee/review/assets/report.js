(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("cnnsee-data").textContent);
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.tag"));
  var zoom = 0;
  document.querySelectorAll(".cell img").forEach(function (img) {
    var index = Number(img.dataset.image);
    if (data.images[index] === null) { data.images[index] = img.getAttribute("src"); }
  });

  // The latest frame at or before `step`, else the run's first frame: frames are [step, image index], by step.
  function frameAt(frames, step) {
    var found = frames[0];
    for (var i = 0; i < frames.length && frames[i][0] <= step; i++) { found = frames[i]; }
    return found;
  }

  function sizeImage(img) {
    img.style.width = zoom ? (img.naturalWidth * zoom) + "px" : "";
  }

  function showTag(section, index) {
    var tag = data.tags[Number(section.dataset.tag)];
    var step = tag.steps[index];
    section.querySelector(".step-label").textContent = "step " + step;
    section.querySelector(".step-count").textContent = (index + 1) + "/" + tag.steps.length;
    section.querySelectorAll(".cell").forEach(function (cell) {
      var frames = tag.frames[Number(cell.dataset.run)];
      if (!frames) { return; }
      var frame = frameAt(frames, step);
      var img = cell.querySelector("img");
      if (img.dataset.image !== String(frame[1])) {
        img.src = data.images[frame[1]];
        img.dataset.image = String(frame[1]);
      }
      img.dataset.step = String(frame[0]);
      var stale = frame[0] !== step;
      var at = cell.querySelector(".at");
      at.textContent = "step " + frame[0];
      at.title = stale ? "no image at step " + step + " in this run: showing step " + frame[0] : "";
      cell.classList.toggle("stale", stale);
    });
  }

  sections.forEach(function (section) {
    var slider = section.querySelector("input.step-slider");
    slider.addEventListener("input", function () { showTag(section, Number(slider.value)); });
  });

  // One slider for every tag: each tag goes to its latest step at or before the chosen one.
  var all = document.getElementById("all-steps");
  var play = document.getElementById("play");
  var allLabel = document.getElementById("all-step");
  function showAll(index) {
    var step = data.steps[index];
    allLabel.textContent = "step " + step;
    sections.forEach(function (section) {
      var steps = data.tags[Number(section.dataset.tag)].steps;
      var pick = 0;
      for (var i = 0; i < steps.length && steps[i] <= step; i++) { pick = i; }
      var slider = section.querySelector("input.step-slider");
      slider.value = String(pick);
      showTag(section, pick);
    });
  }
  var timer = null;
  function stop() {
    clearInterval(timer);
    timer = null;
    play.setAttribute("aria-pressed", "false");
    play.textContent = "\u25b6 play";
  }
  if (all) {  // a page of charts only has no step slider
    all.addEventListener("input", function () { showAll(Number(all.value)); });
    play.addEventListener("click", function () {
      if (timer !== null) { stop(); return; }
      if (Number(all.value) >= data.steps.length - 1) { all.value = "0"; showAll(0); }
      play.setAttribute("aria-pressed", "true");
      play.textContent = "\u275a\u275a pause";
      timer = setInterval(function () {
        var next = Number(all.value) + 1;
        if (next >= data.steps.length) { stop(); return; }
        all.value = String(next);
        showAll(next);
      }, 700);
    });
  }

  document.querySelectorAll("input[type=checkbox][data-run]").forEach(function (box) {
    box.addEventListener("change", function () {
      document.querySelectorAll("[data-run='" + box.dataset.run + "']").forEach(function (element) {
        if (element !== box) { element.classList.toggle("hidden", !box.checked); }
      });
    });
  });

  var showSame = document.getElementById("show-same");
  if (showSame) {
    showSame.addEventListener("change", function () { document.body.classList.toggle("show-same", showSame.checked); });
  }

  var size = document.getElementById("size");
  size.addEventListener("change", function () {
    zoom = size.value === "fit" ? 0 : Number(size.value);
    document.body.classList.toggle("size-zoom", zoom > 0);
    document.querySelectorAll(".cell img").forEach(sizeImage);
  });
  document.querySelectorAll(".cell img").forEach(function (img) {
    img.addEventListener("load", function () { sizeImage(img); });
  });
})();
