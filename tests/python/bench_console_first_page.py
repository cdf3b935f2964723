"""Times the console's first page of search over 100,000 agents, in Chromium: from the start of
navigation to the results drawn (the page's `meridian:results` mark), for an empty search (every
agent, facets over all of them), a common word, a rare word and a misspelt word, each loaded
ten times after one warm-up. Run from the repository root:

    target/ci-venv/bin/python tests/python/bench_console_first_page.py

It runs `cargo bench -p meridian-node --bench console_node` (a node over 100,000 agents on
loopback) and prints the median and slowest of each. Not a test: a figure for
docs/benchmarks.md, never an assertion."""

import statistics
import subprocess
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

import browsing

QUERIES = {"every agent (no words)": "", "a word all agents have": "answers",
           "a rare word": "77777", "a misspelt word": "transalte"}
LOADS = 10


def first_page_ms(browser, url):
    browser.get(url)
    browsing.wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "ol.results li, #view p")), 30)
    return browser.execute_script(
        'const m = performance.getEntriesByName("meridian:results"); return m.length ? m[0].startTime : null;')


def main():
    node = subprocess.Popen(["cargo", "bench", "-q", "-p", "meridian-node", "--bench", "console_node"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = node.stdout.readline()
    if not line.startswith("serving "):
        sys.exit(f"the node did not start: {line!r}")
    base = line.split()[1]
    browser = browsing.driver(browsing.SHOTS)
    try:
        for label, q in QUERIES.items():
            url = f"{base}/console/?q={q}"
            first_page_ms(browser, url)
            times = [first_page_ms(browser, url) for _ in range(LOADS)]
            if None in times:
                sys.exit(f"{label}: the page drew no results")
            print(f"{label:<26} median {statistics.median(times):6.0f} ms   slowest {max(times):6.0f} ms")
        browser.save_screenshot(str(browsing.SHOTS / "search-100k.png"))
    finally:
        browser.quit()
        node.stdin.close()
        node.wait(timeout=60)


if __name__ == "__main__":
    main()
