"""Errors carry a stable code and render in zh-CN and en."""

from __future__ import annotations

import pytest

from safecity.kernel import errors
from safecity.kernel.errors import Forbidden, NotFound, PayloadTooLarge, SafeCityError, ServiceUnavailable


def test_not_found_renders_in_both_languages() -> None:
    err = NotFound(what="incident", id="INC-1")
    assert err.render("en") == "incident INC-1 was not found."
    assert err.render("zh-CN") == "未找到incident INC-1。"
    assert err.render() == err.render("zh-CN")  # Chinese is the default locale
    assert err.title("en") == "Not found"
    assert err.title("zh-CN") == "未找到"
    assert str(err) == "incident INC-1 was not found."
    assert (err.code, err.status) == ("not_found", 404)


def test_detail_is_appended_and_becomes_the_message() -> None:
    err = PayloadTooLarge("topic safecity/c1/smoke/d1", size=70000, limit=65536)
    assert err.render("en") == "The payload has 70000 bytes; the limit is 65536. topic safecity/c1/smoke/d1"
    assert err.render("zh") == "数据大小 70000 字节，超过上限 65536 字节。 topic safecity/c1/smoke/d1"
    assert str(err) == "topic safecity/c1/smoke/d1"


def test_missing_parameters_fall_back_to_the_template() -> None:
    assert Forbidden().render("en") == "This requires one of the roles: {roles}."
    assert ServiceUnavailable(service="NATS").render("zh-CN") == "NATS 当前不可用。"


def test_errors_chain_their_cause() -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        try:
            raise ConnectionRefusedError("down")
        except ConnectionRefusedError as err:
            raise ServiceUnavailable(service="NATS") from err
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def _all_errors() -> list[type[SafeCityError]]:
    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, SafeCityError) and obj is not SafeCityError
    ]


def test_every_error_has_its_own_code_and_both_languages() -> None:
    found = _all_errors()
    assert len(found) >= 7
    codes = [cls.code for cls in found]
    assert len(codes) == len(set(codes)), "codes are unique"
    for cls in found:
        assert cls.code != SafeCityError.code, cls
        assert 400 <= cls.status < 600
        assert cls.message_en != cls.message_zh
        assert cls.title_en and cls.title_zh
        assert cls.__doc__
