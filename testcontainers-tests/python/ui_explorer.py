"""The events explorer (`/ui`) in a real browser: Debian's Chromium driven by Selenium through
chromium-driver, against the real service the Rust test started with seeded events.

    ui_explorer.py BASE_URL KEY SCOPED_KEY BROKEN_BASE_URL SCENARIO_JSON SCREENSHOT_DIR

SCENARIO_JSON names what the test seeded: the view to compare (`from`, `to`), the archived
window, the scoped key's consumers, a consumer and type to filter by. Each check compares what
the page shows with the API's own answers (`/v1/find`, paged by cursor), not with numbers
written here. Prints one JSON object: the checks passed, the figures measured (the first table's
render time after its answer) and the screenshots written; exits 1 with the first failure.
"""

import calendar
import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, KEY, SCOPED_KEY, BROKEN_BASE, SCENARIO, SHOTS = sys.argv[1:7]
SCENARIO = json.loads(SCENARIO)
os.makedirs(SHOTS, exist_ok=True)
checks = []
figures = {}
shots = []


class Failed(Exception):
    pass


def check(cond, what, detail=""):
    if not cond:
        raise Failed(f"{what}: {detail}")
    checks.append(what)


# --- the API, for the expected answers ---------------------------------------------------

def api(path, key=KEY, query=None, method="GET", body=None):
    url = BASE + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-Api-Key", key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def find_all(query, key=KEY):
    """Every event of a find, page by page, as the API pages it."""
    out, cursor = [], None
    for _ in range(10_000):
        q = dict(query)
        if cursor:
            q["cursor"] = cursor
        status, body = api("/v1/find", key, q)
        if status != 200:
            raise Failed(f"find {q}: {status} {body}")
        out.extend(body["events"])
        cursor = body.get("next_cursor")
        if not cursor or not body["events"]:
            return out
    raise Failed("paging does not end")


# --- the browser ---------------------------------------------------------------------------

downloads = tempfile.mkdtemp(prefix="ui-downloads-")
profile = tempfile.mkdtemp(prefix="ui-profile-")
opts = webdriver.ChromeOptions()
opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,800", f"--user-data-dir={profile}", "--lang=en-US"):
    opts.add_argument(arg)
opts.add_experimental_option("prefs", {
    "download.default_directory": downloads,
    "download.prompt_for_download": False,
})
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(
    service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
driver.set_page_load_timeout(30)
driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})


def wait(cond, what, timeout=20):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond())
    except TimeoutException:
        raise Failed(f"timed out waiting for {what}") from None


def el(css):
    return driver.find_element(By.CSS_SELECTOR, css)


def els(css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def shot(name):
    path = os.path.join(SHOTS, f"{name}.png")
    driver.save_screenshot(path)
    shots.append(path)


def open_view(query=""):
    driver.get(BASE + "/ui" + (("?" + query) if query else ""))


def loaded():
    """The results of the current view are in: the status says how many rows, and no page is
    in flight (the rows already shown are all the page has)."""
    s = el("#results-status")
    return s.get_attribute("data-count") not in (None, "") and s.get_attribute("data-loading") != "true"


def rows():
    return [
        {
            "id": r.get_attribute("data-id"),
            "created_at": r.get_attribute("data-created-at"),
            "tier": r.get_attribute("data-tier"),
            "badge": r.find_element(By.CSS_SELECTOR, ".tier-badge").text.strip().lower(),
        }
        for r in els("#results tbody tr.event-row")
    ]


def scroll_to_end(limit_rows=100_000):
    """Scrolls the sentinel into view until the status says the last page is loaded."""
    for _ in range(500):
        if el("#results-status").get_attribute("data-end") == "true":
            return rows()
        before = el("#results-status").get_attribute("data-count")
        driver.execute_script("document.getElementById('sentinel').scrollIntoView({block: 'end'})")
        try:
            WebDriverWait(driver, 10, poll_frequency=0.1).until(
                lambda d: el("#results-status").get_attribute("data-count") != before
                or el("#results-status").get_attribute("data-end") == "true")
        except TimeoutException:
            raise Failed(f"scrolling loaded no page after {before} rows") from None
    raise Failed("scrolling does not end")


def error_banner():
    e = el("#error")
    if not e.is_displayed():
        return None
    return e.get_attribute("data-status"), e.text


def sign_in(key):
    wait(lambda: el("#signin").is_displayed(), "the sign-in form")
    box = el("#api-key")
    box.clear()
    box.send_keys(key)
    el("#signin-submit").click()


def sign_out():
    el("#signout").click()
    wait(lambda: el("#signin").is_displayed(), "the sign-in form after sign out")


def qs(url):
    return urllib.parse.parse_qs(urllib.parse.urlparse(url).query)


def main():
    frm, to = SCENARIO["from"], SCENARIO["to"]
    view = urllib.parse.urlencode({"from": frm, "to": to, "tz": "utc"})

    # 1. Sign in: a bad key is refused with a message; the key is kept in sessionStorage only.
    open_view(view)
    sign_in("not-a-key")
    wait(lambda: el("#signin-error").text.strip() != "", "the sign-in error")
    check("401" in el("#signin-error").text or "refused" in el("#signin-error").text.lower(),
          "a bad key shows the refusal", el("#signin-error").text)
    shot("01-signin-refused")
    sign_in(KEY)
    wait(lambda: el("#signin").is_displayed() is False and loaded(), "the first results")
    check(driver.execute_script("return sessionStorage.length") >= 1
          and KEY not in driver.current_url
          and KEY not in json.dumps(driver.execute_script(
              "return Object.assign({}, localStorage)")),
          "the key is in sessionStorage, not in the URL or localStorage")
    answer = driver.execute_script(
        "return performance.getEntriesByName('auditlog:first-answer').map(e => e.startTime)")
    table = driver.execute_script(
        "return performance.getEntriesByName('auditlog:first-table').map(e => e.startTime)")
    check(answer and table, "the page marks its first answer and first table", f"{answer} {table}")
    figures["first_table_ms"] = round(table[0] - answer[0], 1)
    shot("02-results-1280x800")
    # No layout shift while the page loads its answers (Chromium's layout-shift entries, the
    # Cumulative Layout Shift of web vitals; 0.1 is "good").
    shift = driver.execute_async_script("""
        const done = arguments[0];
        let total = 0;
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) if (!e.hadRecentInput) total += e.value;
        }).observe({type: 'layout-shift', buffered: true});
        setTimeout(() => done(total), 300);""")
    figures["layout_shift"] = round(shift, 4)
    check(shift < 0.1, "loading the view shifts no layout (CLS < 0.1)", shift)

    # 2. Scrolling loads every page, with no duplicate and no gap against the API's pages.
    expected = find_all({"created_from": frm, "created_to": to, "order": "desc", "limit": 100})
    check(len(expected) > 200, "the view spans more than two pages", len(expected))
    got = scroll_to_end()
    check([r["id"] for r in got] == [e["id"] for e in expected],
          "scrolling shows every event once, in the API's order",
          f"{len(got)} rows vs {len(expected)} events")
    check(el("#results-status").get_attribute("data-count") == str(len(expected)),
          "the status counts the rows")

    # 3. The histogram's buckets equal find's counts for those buckets.
    wait(lambda: len(els("#histogram .bar")) > 0, "histogram bars")
    driver.execute_script("window.scrollTo(0, 0)")
    shot("02b-overview")  # the README's picture
    bars = [(b.get_attribute("data-start"), b.get_attribute("data-end"), int(b.get_attribute("data-count")))
            for b in els("#histogram .bar")]
    check(sum(c for _, _, c in bars) == len(expected), "the histogram's total is the view's",
          f"{sum(c for _, _, c in bars)} vs {len(expected)}")
    nonzero = [b for b in bars if b[2] > 0]
    for start, end, count in nonzero[:6] + [b for b in bars if b[2] == 0][:2]:
        lo, hi = max(start, frm), min(end, to)
        n = len(find_all({"created_from": lo, "created_to": hi, "limit": 1000}))
        check(n == count, f"bucket {start} counts what find finds", f"{count} vs {n}")
    check(el("#h-total").text.replace(",", "").replace("\u202f", "").find(str(len(expected))) >= 0,
          "the histogram shows the total", el("#h-total").text)

    # 4. Filters narrow the table, live in the URL, and a copied URL opens the same view.
    consumer, kind = SCENARIO["consumer"], SCENARIO["type"]
    el("#f-consumer").clear()
    el("#f-consumer").send_keys(consumer)
    el("#f-type").clear()
    el("#f-type").send_keys(kind)
    el("#f-apply").click()
    wait(lambda: "consumer" in qs(driver.current_url) and loaded(), "the filtered view")
    narrowed = find_all({"created_from": frm, "created_to": to, "order": "desc", "limit": 100,
                         "consumer": consumer, "type": kind})
    got = scroll_to_end()
    check(0 < len(got) < len(expected), "filters narrow the table", f"{len(got)} of {len(expected)}")
    check([r["id"] for r in got] == [e["id"] for e in narrowed], "the filtered rows are find's")
    url = driver.current_url
    check(qs(url).get("consumer") == [consumer] and qs(url).get("type") == [kind],
          "the filters are in the URL", url)
    driver.get("about:blank")
    driver.get(url)
    wait(loaded, "the view from a copied URL")
    check(el("#f-consumer").get_attribute("value") == consumer
          and el("#f-type").get_attribute("value") == kind, "the URL fills the filters back in")
    check([r["id"] for r in scroll_to_end()] == [e["id"] for e in narrowed],
          "the URL opens the same rows")
    driver.back()
    wait(lambda: qs(driver.current_url).get("consumer") is None or driver.current_url == "about:blank",
         "back goes to the unfiltered view")
    open_view(view)
    wait(loaded, "the unfiltered view")

    # 5. The detail drawer, by keyboard: `/` focuses the type filter, j selects, Enter opens.
    first = rows()[0]
    # Keys go to the page itself, as after a click on empty space (a click could land on a bar).
    unfocus = "document.activeElement && document.activeElement.blur()"
    driver.execute_script(unfocus)
    ActionChains(driver).send_keys("/").perform()
    check(driver.switch_to.active_element.get_attribute("id") == "f-type", "/ focuses the type filter")
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    driver.execute_script(unfocus)
    ActionChains(driver).send_keys("j").perform()
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    wait(lambda: el("#drawer").is_displayed(), "the drawer by keyboard")
    status, stored = api(f"/v1/event/{first['id']}")
    shown = json.loads(el("#drawer-payload").text)
    check(shown.get("payload", shown) == stored.get("payload") or shown == stored.get("payload"),
          "the drawer shows the event's payload", f"{shown} vs {stored}")
    shot("03-drawer")
    driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": BASE, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    el("#drawer-copy").click()
    copied = driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('ERR ' + e))")
    check(json.loads(copied)["id"] == first["id"], "Copy JSON copies the event", copied[:200])
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    wait(lambda: not el("#drawer").is_displayed(), "Esc closes the drawer")

    # 6. Export of the whole view (every page, not only the loaded rows) as NDJSON and CSV.
    for button, ext in (("#export-ndjson", ".ndjson"), ("#export-csv", ".csv")):
        el(button).click()
        path = wait(lambda: next((os.path.join(downloads, f) for f in os.listdir(downloads)
                                  if f.endswith(ext)), None), f"the {ext} download", 60)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if ext == ".ndjson":
            ids = [json.loads(line)["id"] for line in text.splitlines() if line.strip()]
        else:
            table_rows = list(csv.DictReader(io.StringIO(text)))
            ids = [r["id"] for r in table_rows]
            check({"id", "created_at", "type", "consumer", "payload"} <= set(table_rows[0]),
                  "the CSV has the event's columns", list(table_rows[0]))
        check(ids == [e["id"] for e in expected], f"the {ext} export holds the whole view",
              f"{len(ids)} vs {len(expected)}")

    # 7. Dragging across the histogram narrows the range to the dragged buckets.
    bars_el = els("#histogram .bar")
    busy = [i for i, b in enumerate(bars_el) if int(b.get_attribute("data-count")) > 0]
    a, b = busy[0], busy[min(2, len(busy) - 1)]
    start, end = bars_el[a].get_attribute("data-start"), bars_el[b].get_attribute("data-end")
    ActionChains(driver).move_to_element(bars_el[a]).click_and_hold() \
        .move_to_element(bars_el[b]).release().perform()
    wait(lambda: qs(driver.current_url).get("from") != [frm] and loaded(), "the dragged range")
    q = qs(driver.current_url)
    lo, hi = max(q["from"][0], frm), min(q["to"][0], to)
    check(q["from"][0] <= start and q["to"][0] >= end and (q["from"][0], q["to"][0]) != (frm, to),
          "dragging narrows the range to the dragged bars", f"{q} vs {start}..{end}")
    dragged = find_all({"created_from": lo, "created_to": hi, "order": "desc", "limit": 100})
    check([r["id"] for r in scroll_to_end()] == [e["id"] for e in dragged],
          "the narrowed range shows find's events for it")
    shot("04-histogram-dragged")

    # 7b. Clicking one bar narrows the range to that bar.
    open_view(view)
    wait(lambda: loaded() and len(els("#histogram .bar")) > 0, "the view's bars")
    bars_el = els("#histogram .bar")
    one = next(b for b in bars_el if int(b.get_attribute("data-count")) > 0)
    start, end, count = (one.get_attribute("data-start"), one.get_attribute("data-end"),
                         int(one.get_attribute("data-count")))
    ActionChains(driver).move_to_element(one).click().perform()
    wait(lambda: qs(driver.current_url).get("from") != [frm] and loaded(), "the clicked bar's range")
    q = qs(driver.current_url)
    check((q["from"][0], q["to"][0]) == (max(start, frm), min(end, to)),
          "clicking a bar narrows the range to it", f"{q} vs {start}..{end}")
    check(len(scroll_to_end()) == count, "the clicked bar's events are its count", count)

    # 7c. Times in local time: the same instants, written in the browser's zone.
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    open_view(view)
    wait(loaded, "the view in UTC")
    first_row = el("#results tbody tr.event-row")
    utc_text = first_row.find_element(By.CSS_SELECTOR, "td").text
    at = first_row.get_attribute("data-created-at")
    Select(el("#f-tz")).select_by_value("local")
    wait(lambda: qs(driver.current_url).get("tz") == ["local"] and loaded()
         and el("#results tbody tr.event-row td").text != utc_text, "the view in local time")
    local_text = el("#results tbody tr.event-row td").text
    expected_local = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(
        calendar.timegm(time.strptime(at[:19], "%Y-%m-%dT%H:%M:%S")) + 5.5 * 3600)) + at[19:23]
    check(utc_text == at[:10] + " " + at[11:23] and local_text == expected_local,
          "the UTC/local switch rewrites times in the browser's zone", f"{utc_text} / {local_text}")
    check("UTC" not in el("#results thead").text, "the time column says it is local",
          el("#results thead").text)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})

    # 8. The newcomer's path, with the page's own controls only: one consumer's events in a
    #    past hour (the archived one), found by typing the range, and exported. Archived rows
    #    carry their badge.
    a_from, a_to = SCENARIO["archive_from"], SCENARIO["archive_to"]
    who = SCENARIO["archive_consumer"]
    open_view(urllib.parse.urlencode({"tz": "utc"}))
    wait(loaded, "the default view")
    Select(el("#f-range")).select_by_value("custom")
    for box, at in (("#f-from", a_from), ("#f-to", a_to)):
        typed = time.strptime(at[:19], "%Y-%m-%dT%H:%M:%S")
        hour12 = typed.tm_hour % 12 or 12
        # Focus lands on the first segment (a click would land on the one under the pointer).
        # Chromium's datetime-local in en-US: month, day, year | hour, minute, second, AM/PM.
        driver.execute_script("arguments[0].focus()", el(box))
        ActionChains(driver).send_keys(
            time.strftime("%m%d%Y", typed) + Keys.TAB
            + f"{hour12:02d}{typed.tm_min:02d}{typed.tm_sec:02d}"
            + ("P" if typed.tm_hour >= 12 else "A")).perform()
    el("#f-consumer").clear()
    el("#f-consumer").send_keys(who)
    el("#f-apply").click()
    wait(lambda: qs(driver.current_url).get("consumer") == [who] and loaded(), "the typed view")
    q = qs(driver.current_url)
    check(q.get("from", [""])[0][:19] == a_from[:19] and q.get("to", [""])[0][:19] == a_to[:19],
          "typed From and To become the view's range", q)
    got = scroll_to_end()
    archived = find_all({"created_from": a_from, "created_to": a_to, "consumer": who,
                         "order": "desc", "limit": 100})
    check([r["id"] for r in got] == [e["id"] for e in archived] and got,
          "the consumer's events of that hour are shown", f"{len(got)} vs {len(archived)}")
    check(all(r["tier"] == "archive" and r["badge"] == "archive" for r in got),
          "archived rows carry the archive badge", got[:2])
    shot("05-archive-badge")
    for f in os.listdir(downloads):
        os.remove(os.path.join(downloads, f))
    el("#export-csv").click()
    path = wait(lambda: next((os.path.join(downloads, f) for f in os.listdir(downloads)
                              if f.endswith(".csv")), None), "the consumer's CSV", 60)
    with open(path, encoding="utf-8", newline="") as f:
        exported = list(csv.DictReader(f))
    check([r["id"] for r in exported] == [e["id"] for e in archived]
          and all(r["consumer"] == who for r in exported),
          "the export holds that consumer's events of that hour", f"{len(exported)} rows")
    check(json.loads(exported[0]["payload"]) == archived[0]["payload"],
          "the CSV keeps the payload as JSON", exported[0]["payload"])

    # 9. The phone width and the dark scheme.
    driver.set_window_size(390, 844)
    open_view(view)
    wait(loaded, "the view at phone width")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    check(width <= 392, "nothing overflows a phone's width", width)
    shot("06-phone-390")
    driver.set_window_size(1280, 800)
    light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    dark = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    check(light != dark, "the page follows prefers-color-scheme", f"{light} / {dark}")
    shot("07-dark")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

    # 10. Live tail shows an event posted after the page opened, once it is complete.
    open_view(urllib.parse.urlencode({"range": "15m", "tz": "utc"}))
    wait(loaded, "the last 15 minutes")
    live = el("#live")
    if not live.is_selected():
        live.click()
    time.sleep(0.5)
    status, posted = api("/v1/event", method="POST", body={
        "type": "ui.tail", "consumer": SCENARIO["consumer"], "payload": {"posted": "after open"}})
    check(status == 201, "the tail event is stored", posted)
    wait(lambda: any(r["id"] == posted["id"] for r in rows()), "the tailed event in the table", 30)
    check(rows()[0]["id"] == posted["id"], "a tailed event comes in at the top")
    shot("08-live-tail")
    live.click()

    # 10b. Scrolled down, live events are held and counted, and come in on scrolling back.
    open_view(urllib.parse.urlencode({"range": "24h", "tz": "utc"}))
    wait(loaded, "the last 24 hours")
    el("#live").click()
    driver.execute_script("window.scrollTo(0, 900)")
    status, held = api("/v1/event", method="POST", body={
        "type": "ui.tail", "consumer": SCENARIO["consumer"], "payload": {"posted": "while scrolled"}})
    check(status == 201, "the held event is stored", held)
    wait(lambda: el("#live-status").get_attribute("data-paused") == "true", "the paused banner", 30)
    check(el("#live-banner-text").text.startswith("1 new event"),
          "the banner counts the held event, not the ones shown", el("#live-banner-text").text)
    check(held["id"] not in [r["id"] for r in rows()], "a held event is not inserted while scrolled")
    shot("08b-live-paused")
    driver.execute_script("window.scrollTo(0, 0)")
    wait(lambda: rows()[0]["id"] == held["id"], "the held event at the top after scrolling back")
    check(el("#live-status").get_attribute("data-paused") != "true", "scrolling back resumes live")
    el("#live").click()

    # 11. A scoped key sees only its consumers, and is refused another's.
    sign_out()
    open_view(view)
    sign_in(SCOPED_KEY)
    wait(lambda: not el("#signin").is_displayed() and loaded(), "the scoped key's view")
    got = scroll_to_end()
    scoped = find_all({"created_from": frm, "created_to": to, "order": "desc", "limit": 100},
                      key=SCOPED_KEY)
    check(0 < len(got) < len(expected) and [r["id"] for r in got] == [e["id"] for e in scoped],
          "a scoped key sees only its consumers' events", f"{len(got)} of {len(expected)}")
    bars = [int(b.get_attribute("data-count")) for b in els("#histogram .bar")]
    check(sum(bars) == len(scoped), "the scoped key's histogram counts only its consumers")
    open_view(urllib.parse.urlencode({"from": frm, "to": to, "consumer": SCENARIO["other_consumer"]}))
    wait(lambda: error_banner() is not None, "the 403 banner")
    check(error_banner()[0] == "403", "another consumer is refused with 403", error_banner())
    shot("09-scoped-403")
    sign_out()

    # 12. The archive unavailable: 503, said so.
    arch = urllib.parse.urlencode({"from": a_from, "to": a_to, "tz": "utc"})
    driver.get(BROKEN_BASE + "/ui?" + arch)
    sign_in(KEY)
    wait(lambda: error_banner() is not None, "the 503 banner", 40)
    check(error_banner()[0] == "503", "an unavailable archive is a 503 banner", error_banner())
    shot("10-archive-unavailable")

    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
              and "/v1/" not in e.get("message", "")]
    check(not severe, "no script error in the console", severe[:3])


try:
    main()
    ok = True
    failure = None
except Failed as e:
    ok = False
    failure = str(e)
    try:
        shot("zz-failure")
        logs = driver.get_log("browser")
    except Exception:  # noqa: BLE001 - the report matters more than a last screenshot
        logs = []
    failure += "\nbrowser console: " + json.dumps(logs[-10:])
finally:
    driver.quit()
print(json.dumps({"ok": ok, "failure": failure, "checks": checks, "figures": figures,
                  "screenshots": shots}))
sys.exit(0 if ok else 1)
