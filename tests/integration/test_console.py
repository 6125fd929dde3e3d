"""The console in a real headless Chromium against the running daemon (real HTTP, ZeroMQ).

Each test keeps a screenshot under tests/artifacts/ (not committed). With README_SCREENSHOT=1
the first one is also written to docs/console.png, the README's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.browser import chromium, screenshot
from tests.integration.conftest import Reply, wait_until
from tests.integration.test_api import ADMIN, READ, start

WAIT = 30.0  # seconds any one condition may take on a busy machine: a deadline, not a bound
DOCS_SHOT = Path(__file__).parents[2] / "docs" / "console.png"


@pytest.fixture
def browser(tmp_path, request):
    driver = chromium(tmp_path / "chromium-profile")
    yield driver
    try:
        screenshot(driver, request.node.name)
    finally:
        driver.quit()


def webhooks(hooks) -> list[dict]:
    return [
        {"name": "orders", "url": hooks.url("/orders"), "events": ["ORDER_*"],
         "projects": ["shop"]},
        {"name": "broken", "url": hooks.url("/broken"), "events": ["STOCK_*"],
         "retry": {"attempts": 1}},
    ]  # fmt: skip


def until(driver, check, what: str):
    """Wait for ``check(driver)`` to be truthy (WebDriverWait); fail saying ``what``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, 0.05).until(check, f"waiting for {what}")


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str:
    """The text shown by the first element matching ``selector`` ("": none), read in one step:
    the page replaces its rows as it refreshes, so a found element may be gone a moment later."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : '';",
        selector,
    )


def attribute(driver, selector: str, name: str) -> str | None:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1]);",
        selector, name,
    )  # fmt: skip


def click(driver, selector: str) -> None:
    """Click the element once it is there (again, if a refresh replaced it meanwhile)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def clicked(d) -> bool:
        try:
            css(d, selector).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    until(driver, clicked, f"{selector} to click")


def sign_in(driver, port: int, token: str = ADMIN) -> None:
    driver.get(f"http://127.0.0.1:{port}/")
    css(driver, "#token").send_keys(token)
    css(driver, "#signin-button").click()
    until(driver, lambda d: attribute(d, "body", "data-view") == "console", "the console")


def fetch(driver, method: str, path: str, csrf: bool) -> int:
    """A request from the page's own script (its cookie), with or without the CSRF header."""
    return driver.execute_async_script(
        """const [method, path, csrf, done] = arguments;
        const token = document.querySelector('meta[name="csrf"]').content;
        const headers = csrf ? {"X-CSRF-Token": token} : {};
        fetch(path, {method, headers, credentials: "same-origin"}).then((r) => done(r.status));""",
        method, path, csrf,
    )  # fmt: skip


def new_webhook_form(daemon_factory, hooks, driver, *events: dict):
    """The daemon, sent ``events`` first; the browser signed in, on the new webhook form."""
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    for event in events:
        d.send(event)
    sign_in(driver, _port(d))
    css(driver, "#nav-new").click()
    return d


def open_webhook(driver, name: str) -> None:
    click(driver, f'#webhooks tr[data-name="{name}"] a')
    until(driver, lambda d: text_of(d, "#w-name") == name, f"the page of {name}")


def test_the_list_shows_each_webhook_with_its_health_queue_and_last_hour(
    hooks, daemon_factory, browser
):
    hooks.default("/broken", Reply(500, body=b"stock service down"))
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    for i in range(3):
        d.send({"type": "ORDER_PAID", "id": f"o{i}", "project": "shop", "data": {"total": i}})
    d.send({"type": "STOCK_LOW", "id": "s1"})  # its one attempt fails: broken is disabled
    wait_until(lambda: d.webhook("broken")["state"] == "disabled", what="broken disabled")
    d.send({"type": "STOCK_LOW", "id": "s2"})  # held, with the next
    d.send({"type": "STOCK_LOW", "id": "s3"})
    wait_until(lambda: d.webhook("orders")["delivered"] == 3, what="orders' deliveries")
    sign_in(browser, _port(d))
    row = '#webhooks tr[data-name="broken"]'
    until(browser, lambda b: text_of(b, f"{row} .health") == "Unhealthy", "broken unhealthy")
    assert text_of(browser, f"{row} .state").startswith("Turned off")
    assert text_of(browser, '#webhooks tr[data-name="orders"] .health') == "Healthy"
    until(browser, lambda b: text_of(b, f"{row} .queued") == "2", "broken's queue of 2")
    chart = '#webhooks tr[data-name="orders"] svg'
    until(browser, lambda b: attribute(b, chart, "data-delivered") == "3", "the chart")
    assert attribute(browser, f"{row} svg", "data-failed") == "1"
    assert text_of(browser, f"{row} .source").startswith("file router.yaml:")
    assert text_of(browser, "#who-token") == "ops"
    if os.environ.get("README_SCREENSHOT"):
        DOCS_SHOT.parent.mkdir(exist_ok=True)
        browser.set_window_size(1280, 600)
        browser.save_screenshot(str(DOCS_SHOT))


def _port(d) -> int:
    return int(d.settings["api"]["bind"].rsplit(":", 1)[1])


def test_a_bad_token_is_refused_and_no_session_is_made(hooks, daemon_factory, browser):
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    browser.get(f"http://127.0.0.1:{_port(d)}/")
    css(browser, "#token").send_keys("wr_not-a-token-anyone-has")
    css(browser, "#signin-button").click()
    until(browser, lambda b: "not known here" in text_of(b, "#signin-message"), "the refusal")
    assert css(browser, "body").get_attribute("data-view") == "signin"
    assert browser.get_cookie("wr_session") is None
    assert "wr_not-a-token-anyone-has" not in d.log()


def test_one_webhook_in_words_its_attempt_log_and_the_test_button(hooks, daemon_factory, browser):
    hooks.default("/orders", Reply(200, body=b'{"received": true}'))
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    d.send({"type": "ORDER_PAID", "id": "o1", "project": "shop"})
    wait_until(lambda: hooks.ids("/orders") == ["o1"], what="the delivery")
    sign_in(browser, _port(d))
    open_webhook(browser, "orders")
    words = text_of(browser, "#w-subscription")
    assert words == "Events of any type starting with “ORDER_”, in project “shop”, of any company."
    until(browser, lambda b: len(all_css(b, "#attempts tbody tr")) == 1, "the attempt log")
    assert "o1" in text_of(browser, "#attempts tbody tr")
    click(browser, "#attempts details summary")
    until(browser, lambda b: text_of(b, "#attempts details pre") == '{"received": true}',
          "the response body")  # fmt: skip
    css(browser, "#w-test").click()
    until(browser, lambda b: "Test event delivered" in text_of(b, "#w-result"), "the test result")
    assert "answered 200" in text_of(browser, "#w-result")
    (sent,) = hooks.at("/orders", "WEBHOOK_TEST")
    assert sent.json["webhook"] == "orders"


def test_replay_sends_a_delivery_again_and_turn_off_and_on_work(hooks, daemon_factory, browser):
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    d.send({"type": "ORDER_PAID", "id": "o1", "project": "shop"})
    wait_until(lambda: hooks.ids("/orders") == ["o1"], what="the delivery")
    sign_in(browser, _port(d))
    open_webhook(browser, "orders")
    css(browser, "#w-replay-button").click()
    until(browser, lambda b: text_of(b, "#w-result") == "1 delivery is queued again.", "replay")
    wait_until(lambda: hooks.ids("/orders") == ["o1", "o1"], what="the replayed delivery")
    css(browser, "#w-disable").click()
    until(browser, lambda b: text_of(b, "#w-summary").startswith("Turned off"), "turned off")
    assert d.webhook("orders")["state"] == "disabled"
    until(browser, lambda b: css(b, "#w-enable").is_displayed(), "the turn-on button")
    css(browser, "#w-enable").click()
    until(browser, lambda b: "health check passed" in text_of(b, "#w-result"), "turned on")
    assert d.webhook("orders")["state"] == "active"
    assert hooks.at("/orders", "WEBHOOK_HEALTH_CHECK")


def test_a_webhook_made_in_the_form_gets_events_signed_with_its_one_time_secret(
    hooks, daemon_factory, browser
):
    d = new_webhook_form(daemon_factory, hooks, browser)
    css(browser, "#f-name").send_keys("invoices")
    css(browser, "#f-url").send_keys(hooks.url("/invoices"))
    css(browser, "#f-events-input").send_keys("INVOICE_*\n")
    css(browser, "#f-companies-input").send_keys("acme\n")
    css(browser, "#f-private").click()  # the receiver is on loopback
    css(browser, "#f-save").click()
    until(browser, lambda b: css(b, "#c-secret-box").is_displayed(), "the one-time secret")
    secret = text_of(browser, "#c-secret")
    assert secret.startswith("whsec_")
    d.send({"type": "INVOICE_SENT", "id": "i1", "company": "acme"})
    (got,) = wait_until(lambda: hooks.at("/invoices"), what="the event at the new webhook")
    Webhook(secret).verify(got.body, got.headers)
    assert got.json["id"] == "i1"
    css(browser, "#c-open").click()
    until(browser, lambda b: text_of(b, "#w-name") == "invoices", "the new webhook's page")
    assert secret not in browser.page_source  # shown once, never again
    assert text_of(browser, "#w-subscription") == (
        "Events of any type starting with “INVOICE_”, in any project, of company “acme”."
    )
    css(browser, "#w-edit").click()
    until(browser, lambda b: css(b, "#f-name").get_attribute("value") == "invoices", "the form")
    css(browser, "#f-projects-input").send_keys("billing\n")
    css(browser, "#f-save").click()
    until(browser, lambda b: "is changed" in text_of(b, "#c-text"), "the change saved")
    assert not css(browser, "#c-secret-box").is_displayed()  # a kept secret is not shown
    listed = json.loads(d.cli("status", "--json").stdout)
    assert "invoices" in [w["name"] for w in listed["webhooks"]]


def test_the_form_offers_the_event_types_projects_and_companies_seen(
    hooks, daemon_factory, browser
):
    new_webhook_form(daemon_factory, hooks, browser, {
        "type": "INVOICE_SENT", "id": "i0", "project": "billing", "company": "acme",
        "data": {"amount": 1}})  # fmt: skip
    seen = "#seen-types option[value='INVOICE_SENT']"
    until(browser, lambda b: all_css(b, seen), "the event types seen, offered")
    assert all_css(browser, "#seen-projects option[value='billing']")
    assert all_css(browser, "#seen-companies option[value='acme']")
    entry = css(browser, "#f-events-input")
    entry.send_keys("INVOICE_SENT")
    entry.send_keys(",")  # a comma ends an entry too
    assert [c.get_attribute("data-value") for c in all_css(browser, ".chip")] == ["INVOICE_SENT"]


def test_a_form_with_errors_shows_each_of_them_and_saves_once_they_are_fixed(
    hooks, daemon_factory, browser
):
    d = new_webhook_form(daemon_factory, hooks, browser)
    css(browser, "#f-name").send_keys("fixed")
    css(browser, "#f-url").send_keys(hooks.url("/fixed"))  # loopback, not allowed yet
    css(browser, "#f-where").send_keys('{"field": "data.x", "around": 1}')
    css(browser, "#f-save").click()
    until(browser, lambda b: len(all_css(b, "#f-errors li")) == 2, "both errors")
    errors = text_of(browser, "#f-errors")
    assert "url: 127.0.0.1 is a loopback address" in errors and "where" in errors
    assert "fixed" not in [w["name"] for w in d.status()["webhooks"]]
    css(browser, "#f-where").clear()
    css(browser, "#f-private").click()
    css(browser, "#f-save").click()
    until(browser, lambda b: "is made" in text_of(b, "#c-text"), "the webhook saved")
    css(browser, "#nav-new").click()
    css(browser, "#f-name").send_keys("orders")  # a YAML webhook has that name
    css(browser, "#f-url").send_keys("https://example.invalid/x")
    css(browser, "#f-save").click()
    until(browser, lambda b: "orders" in text_of(b, "#f-errors"), "the name taken")


def test_explain_says_in_words_which_webhooks_an_event_reaches(hooks, daemon_factory, browser):
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    sign_in(browser, _port(d))
    css(browser, "#nav-explain").click()
    box = css(browser, "#x-event")
    box.clear()
    box.send_keys('{"type": "ORDER_PAID", "project": "shop"}')
    css(browser, "#x-ask").click()
    until(browser, lambda b: "would reach orders" in text_of(b, "#x-result"), "the verdict")
    assert "does not reach it" in text_of(browser, '#x-result li[data-name="broken"]')


def test_a_change_without_the_csrf_token_is_refused_with_403(hooks, daemon_factory, browser):
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    sign_in(browser, _port(d))
    assert fetch(browser, "POST", "/api/v1/webhooks/orders/disable", csrf=False) == 403
    assert d.webhook("orders")["state"] == "active"
    assert fetch(browser, "POST", "/api/v1/webhooks/orders/disable", csrf=True) == 200
    assert d.webhook("orders")["state"] == "disabled"


def test_a_read_token_sees_no_write_buttons_and_gets_403(hooks, daemon_factory, browser):
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    sign_in(browser, _port(d), READ)
    assert "(read only)" in text_of(browser, ".who")
    assert not css(browser, "#nav-new").is_displayed()
    open_webhook(browser, "orders")
    for button in ("#w-test", "#w-disable", "#w-replay-button", "#w-edit"):
        assert not css(browser, button).is_displayed(), button
    assert fetch(browser, "POST", "/api/v1/webhooks/orders/disable", csrf=True) == 403
    assert d.webhook("orders")["state"] == "active"


def test_signing_out_ends_the_session(hooks, daemon_factory, browser):
    d, _ = start(daemon_factory, hooks, webhooks(hooks))
    sign_in(browser, _port(d))
    old = browser.get_cookie("wr_session")
    assert old["httpOnly"] and old["sameSite"] == "Strict" and old["path"] == "/"
    css(browser, "#signout").click()
    until(browser, lambda b: attribute(b, "body", "data-view") == "signin", "the sign-in form")
    assert browser.get_cookie("wr_session") is None
    browser.add_cookie({"name": "wr_session", "value": old["value"], "path": "/"})
    assert fetch(browser, "GET", "/api/v1/webhooks", csrf=False) == 401
    assert "token ops signed out" in d.log()
