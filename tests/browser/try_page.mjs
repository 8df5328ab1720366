// Walks the try page and the development inbox in a real browser (Debian's chromium, through playwright-core).
//
//   node try_page.mjs BASE_URL SCREENSHOT_DIR [CHROMIUM]
//
// Keyboard only, as a person would: request a code, read it from the inbox page (open before the code was sent:
// it refreshes itself), ask again too soon from another
// window (the resend countdown comes from Retry-After), enter a wrong code and see the attempts left, enter the
// right one and see success, reload and see the used code refused. A screenshot of each step goes to
// SCREENSHOT_DIR. Prints one JSON line per step; exits 1 (with a screenshot of where it stopped) on any failure.
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const [baseUrl, shots, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);
if (!baseUrl || !shots) {
  console.error("usage: node try_page.mjs BASE_URL SCREENSHOT_DIR [CHROMIUM]");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const WAIT = 20000; // ms; a busy 2-core machine, and every wait below is for an event, not a fixed time

const report = (step, detail = {}) => console.log(JSON.stringify({ step, ...detail }));
// The page's <main>: everything it shows, without the empty viewport around it.
const shot = (page, name) => page.locator("main").screenshot({ path: path.join(shots, name + ".png") });

function fail(message) {
  throw new Error(message);
}

async function textOf(page, selector) {
  return (await page.locator(selector).textContent()) || "";
}

async function waitForText(page, selector, pattern) {
  try {
    await page.waitForFunction(
      ([sel, source]) => new RegExp(source).test(document.querySelector(sel)?.textContent || ""),
      [selector, pattern.source],
      { timeout: WAIT },
    );
  } catch (e) {
    fail(`${selector} never said ${pattern}; it says ${JSON.stringify(await textOf(page, selector))}`);
  }
  return textOf(page, selector);
}

async function focusedId(page) {
  return page.evaluate(() => document.activeElement && document.activeElement.id);
}

async function attribute(page, selector, name) {
  return page.locator(selector).getAttribute(name);
}

const userDataDir = mkdtempSync(path.join(tmpdir(), "otp-try-chromium-"));
let context;
let current;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 900, height: 760 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
  context.setDefaultTimeout(WAIT);
  // A script error or a Content-Security-Policy refusal on any page fails the walk-through. (The browser also
  // logs each 4xx answer as "Failed to load resource": a wrong code is meant to get one.)
  const problems = [];
  const watch = (page) => {
    page.on("pageerror", (error) => problems.push(`${page.url()}: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
        problems.push(`${message.location().url || page.url()}: ${message.text()}`);
      }
    });
  };
  context.pages().forEach(watch);
  context.on("page", watch);
  const page = context.pages()[0] || (await context.newPage());
  current = page;
  const email = `ada.${Date.now().toString(36)}@example.com`;

  // 0. The inbox, open in a tab of its own before anything is sent: it must show the code by itself.
  const inbox = await context.newPage();
  current = inbox;
  await inbox.goto(`${baseUrl}/dev/inbox`);
  await waitForText(inbox, "#empty", /No message yet/);
  if ((await inbox.locator("#messages tr").count()) !== 0) fail("a new inbox is not empty");

  // 1. The page, and a code requested with the keyboard only.
  current = page;
  await page.bringToFront();
  await page.goto(`${baseUrl}/try`);
  const length = Number(await attribute(page, "#code", "maxlength"));
  if (!(length >= 4 && length <= 10)) fail(`the code box has no maxlength of OTP_LENGTH (got ${length})`);
  for (const [name, value] of [["inputmode", "numeric"], ["autocomplete", "one-time-code"]]) {
    const got = await attribute(page, "#code", name);
    if (got !== value) fail(`the code box has ${name}=${got}, not ${value}`);
  }
  await shot(page, "01-try-page");
  for (let tabs = 0; (await focusedId(page)) !== "key"; tabs++) {
    if (tabs > 12) fail("the address box cannot be reached with the Tab key");
    await page.keyboard.press("Tab");
  }
  if ((await page.getByLabel("Email address").getAttribute("id")) !== "key") fail("the address box has no label");
  await page.keyboard.type(email);
  await page.keyboard.press("Enter");
  await waitForText(page, "#status", /Code sent to/);
  await page.locator("#code").waitFor({ state: "visible" });
  if ((await focusedId(page)) !== "code") fail("focus did not move to the code box after the code was sent");
  if ((await attribute(page, "#status", "aria-live")) !== "polite") fail("the status line is not aria-live");
  await shot(page, "02-code-sent");
  report("requested", { email, length });

  // 2. The code, read off the inbox page, which has refreshed itself (no reload) and announced the message.
  current = inbox;
  await inbox.bringToFront();
  const row = inbox.locator("#messages tr").first();
  await row.waitFor();
  await waitForText(inbox, "#inbox-status", /^1 new message\.$/);
  if (!(await inbox.locator("#empty").isHidden())) fail("the inbox still says it is empty");
  const text = (await row.locator("td.text").textContent()) || "";
  const found = text.match(new RegExp(`\\b(\\d{${length}})\\b`));
  if (!found) fail(`no ${length}-digit code in the newest inbox message: ${JSON.stringify(text)}`);
  const code = found[1];
  const to = await row.getAttribute("data-to");
  if (!to || to.includes(email)) fail(`the inbox shows the destination unmasked: ${to}`);
  await shot(inbox, "03-inbox");
  report("read from the inbox", { code, to });

  // 3. Asking again too soon, from a tab that knows nothing of the first (sessionStorage is per tab): the
  // service's 429 and its Retry-After start the resend countdown.
  const second = await context.newPage();
  current = second;
  await second.goto(`${baseUrl}/try`);
  await second.getByLabel("Email address").fill(email);
  await second.keyboard.press("Enter");
  const tooSoon = await waitForText(second, "#error", /ask for another in \d+ second/);
  await waitForText(second, "#resend", /Resend code \(in \d+ s\)/);
  if (!(await second.locator("#resend").isDisabled())) fail("the resend button is not disabled during the cool-down");
  if ((await attribute(second, "#error", "aria-live")) !== "assertive") fail("errors are not announced (aria-live)");
  await shot(second, "04-resend-too-soon");
  report("resend refused", { message: tooSoon, resend: await textOf(second, "#resend") });
  await second.close();

  // 4. A wrong code: the attempts left.
  current = page;
  await page.bringToFront();
  const wrong = [...code].map((d) => String((Number(d) + 1) % 10)).join("");
  await page.locator("#code").focus();
  await page.keyboard.type(wrong);
  await page.keyboard.press("Enter");
  const wrongSaid = await waitForText(page, "#error", /Wrong code, \d+ attempts? left/);
  if ((await attribute(page, "#code", "aria-invalid")) !== "true") fail("a wrong code does not mark the box invalid");
  if ((await focusedId(page)) !== "code") fail("focus left the code box after a wrong code");
  await shot(page, "05-wrong-code");
  report("wrong code", { message: wrongSaid });

  // 5. The right code: success.
  await page.keyboard.type(code); // the wrong code is selected, so typing replaces it
  await page.keyboard.press("Enter");
  const verified = await waitForText(page, "#status", /Verified/);
  await shot(page, "06-verified");
  report("verified", { message: verified });

  // 6. Reload, and the same code again: refused, for it is used.
  await page.reload();
  await page.locator("#code").waitFor({ state: "visible" });
  if ((await focusedId(page)) !== "code") fail("after a reload the focus is not in the code box");
  await page.keyboard.type(code);
  await page.keyboard.press("Enter");
  const refused = await waitForText(page, "#error", /no longer works/);
  await shot(page, "07-used-code-refused");
  report("used code refused", { message: refused });
  if (problems.length) fail(`the pages logged errors:\n${problems.join("\n")}`);
  report("done");
} catch (error) {
  console.error(`browser test failed: ${error && error.message ? error.message : error}`);
  if (current) await current.screenshot({ path: path.join(shots, "failure.png"), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
