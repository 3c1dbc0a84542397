"""The demo corpus's document kinds: company profiles, product sheets, acquisition and other
press releases, regulations, legal opinions, finance memos and HR records.

Each kind writes its documents into the `_World` (`demo_world.py`) from the templates in
`demo_vocab.py`, with its ACL (public, legal, finance, hr) and metadata, and records the
facts the questions are drawn from.
"""

from __future__ import annotations

from rayrag.data import demo_vocab as V
from rayrag.data.demo_world import (
    N_ACQUISITIONS,
    N_FINANCE,
    N_HR,
    N_LEGAL,
    N_OTHER_PRESS,
    _add_doc,
    _address,
    _Company,
    _contact,
    _credit_card,
    _email,
    _fill,
    _iban,
    _phone,
    _ssn,
    _World,
)


def _profiles(world: _World) -> None:
    rng = world.rng
    for i, c in enumerate(world.companies):
        blurb = V.SECTOR_BLURB[c.sector]
        article = "an" if blurb[0] in "aeiou" else "a"
        text = _fill(
            rng,
            V.PROFILE_TEXT,
            name=c.name,
            blurb=blurb,
            a_blurb=f"{article} {blurb}",
            city=c.city,
            founded=c.founded,
            ceo=world.person(),
            scientist=world.person(),
            staff=rng.randrange(120, 9000, 10),
        )
        doc = _add_doc(
            world,
            f"profile-{i:03d}",
            "company_profile",
            f"{c.name} company profile",
            text,
            department="communications",
            region=c.region,
            extra={"company": c.name},
        )
        world.doc_of["profile", c.name] = doc
        world.fact("founded", company=c, doc=doc)


def _product_docs(world: _World) -> None:
    rng = world.rng
    for i, c in enumerate(world.companies):
        year = max(c.founded + 1, rng.randint(2005, 2023))
        if c.sector == "pharma":
            condition = rng.choice(V.CONDITIONS)
            text = _fill(
                rng,
                V.DRUG_TEXT,
                agency=rng.choice(V.DRUG_AGENCIES),
                product=c.product,
                name=c.name,
                condition=condition,
                month=rng.choice(V.MONTHS),
                year=year,
                city=c.city,
                share=rng.randint(38, 81),
            )
            doc = _add_doc(
                world,
                f"drug-{i:03d}",
                "drug_approval",
                f"Approval notice: {c.product}",
                text,
                department="regulatory_affairs",
                region=c.region,
                extra={"company": c.name},
            )
            world.fact("condition", company=c, doc=doc, condition=condition)
        else:
            text = _fill(
                rng,
                V.PRODUCT_TEXT,
                product=c.product,
                name=c.name,
                city=c.city,
                year=year,
                price=rng.randrange(400, 90000, 50),
            )
            doc = _add_doc(
                world,
                f"product-{i:03d}",
                "product_sheet",
                f"{c.product} product sheet",
                text,
                department="engineering",
                region=c.region,
                extra={"company": c.name},
            )
        world.doc_of["product", c.name] = doc
        world.fact("maker", company=c, doc=doc)


def _acquisitions(world: _World) -> None:
    rng = world.rng
    for i, (buyer, target) in enumerate(_acquisition_pairs(world)):
        year = rng.randint(max(2012, buyer.founded + 1, target.founded + 1), 2024)
        text = _fill(
            rng,
            V.ACQUISITION_TEXT,
            city=buyer.city,
            month=rng.choice(V.MONTHS),
            year=year,
            buyer=buyer.name,
            target=target.name,
            value=rng.randrange(40, 2400, 5),
            contact=_contact(world, buyer.domain),
        )
        doc = _add_doc(
            world,
            f"press-{i:03d}",
            "press_release",
            f"{buyer.name} acquires {target.name}",
            text,
            department="communications",
            region=buyer.region,
            extra={"company": buyer.name},
        )
        world.fact("acquisition", buyer=buyer, target=target, doc=doc)


def _acquisition_pairs(world: _World) -> list[tuple[_Company, _Company]]:
    """Buyer/target pairs within a sector; buyers and targets are disjoint and each target
    is bought once, so "the company that acquired X" names exactly one company."""
    pairs: list[tuple[_Company, _Company]] = []
    sectors = sorted(V.SECTOR_SUFFIXES)
    for turn, sector in enumerate(sectors):
        members = world.rng.sample(
            [c for c in world.companies if c.sector == sector],
            len([c for c in world.companies if c.sector == sector]),
        )
        deals = N_ACQUISITIONS // len(sectors) + (turn < N_ACQUISITIONS % len(sectors))
        pairs.extend(zip(members[:deals], members[deals : 2 * deals], strict=True))
    return pairs


def _other_press(world: _World) -> None:
    rng = world.rng
    for i in range(N_OTHER_PRESS):
        c, partner = rng.sample(world.companies, 2)
        text = _fill(
            rng,
            V.OTHER_PRESS_TEXT,
            name=c.name,
            partner=partner.name,
            city=c.city,
            new_city=rng.choice(V.CITIES[rng.choice(sorted(V.CITIES))]),
            contact=_contact(world, c.domain),
        )
        _add_doc(
            world,
            f"press-{N_ACQUISITIONS + i:03d}",
            "press_release",
            f"{c.name} announcement",
            text,
            department="communications",
            region=c.region,
            extra={"company": c.name},
        )


def _regulations(world: _World) -> None:
    rng = world.rng
    for i, (name, sector, agency) in enumerate(V.REGULATIONS):
        year = rng.randint(2008, 2022)
        text = _fill(
            rng,
            V.REGULATION_TEXT,
            regulation=name,
            agency=agency,
            year=year,
            sector=sector,
            duty=V.REGULATION_DUTIES[sector],
            fine=rng.randint(2, 60),
        )
        doc = _add_doc(
            world,
            f"regulation-{i:03d}",
            "regulation_summary",
            name,
            text,
            department="regulatory_affairs",
            region="global",
        )
        world.fact("regulation", name=name, agency=agency, year=year, doc=doc)


def _legal_opinions(world: _World) -> None:
    rng = world.rng
    for i, c in enumerate(rng.sample(world.companies, N_LEGAL)):
        regulation = rng.choice([r for r in V.REGULATIONS if r[1] == c.sector])[0]
        text = _fill(
            rng,
            V.LEGAL_TEXT,
            name=c.name,
            counsel=world.person(),
            firm=rng.choice(V.LAW_FIRMS),
            product=c.product,
            regulation=regulation,
            phone=world.plant("PHONE_NUMBER", _phone(rng)),
        )
        # Every fifth opinion concerns employment practice, so HR may read it too.
        acl = ("legal", "hr") if i % 5 == 0 else ("legal",)
        doc = _add_doc(
            world,
            f"legal-{i:03d}",
            "legal_opinion",
            f"Legal opinion: {c.product}",
            text,
            department="legal",
            region=c.region,
            acl=acl,
            extra={"company": c.name},
        )
        world.fact("legal", company=c, regulation=regulation, doc=doc)


def _finance_memos(world: _World) -> None:
    rng = world.rng
    for i, c in enumerate(rng.sample(world.companies, N_FINANCE)):
        fiscal = rng.randint(2020, 2024)
        revenue = f"${rng.randrange(150, 99000) / 10:,.1f} million"
        preparer = world.person()
        text = _fill(
            rng,
            V.FINANCE_TEXT,
            name=c.name,
            fiscal=fiscal,
            revenue=revenue,
            growth=rng.randint(-8, 35),
            margin=rng.randint(4, 31),
            iban=world.plant("IBAN_CODE", _iban(rng)),
            card=world.plant("CREDIT_CARD", _credit_card(rng)),
            preparer=preparer,
            email=world.plant("EMAIL_ADDRESS", _email(preparer, c.domain)),
        )
        # Every eighth memo is shared with legal for disclosure review.
        acl = ("finance", "legal") if i % 8 == 0 else ("finance",)
        doc = _add_doc(
            world,
            f"finance-{i:03d}",
            "finance_memo",
            f"{c.name} fiscal {fiscal} memo",
            text,
            department="finance",
            region=c.region,
            acl=acl,
            extra={"company": c.name},
        )
        world.fact("revenue", company=c, fiscal=fiscal, revenue=revenue, doc=doc)


def _hr_records(world: _World) -> None:
    rng = world.rng
    for i in range(N_HR):
        c = rng.choice(world.companies)
        department = rng.choice(sorted(V.JOB_TITLES))
        position = rng.choice(V.JOB_TITLES[department])
        employee_id = f"EMP-{10000 + i * 37 + rng.randrange(37)}"  # increasing, so unique
        person = world.person()
        card = ""
        if i % 3 == 0:
            card = f" Corporate card on file: {world.plant('CREDIT_CARD', _credit_card(rng))}."
        text = _fill(
            rng,
            V.HR_TEXT,
            employee_id=employee_id,
            person=person,
            name=c.name,
            joined=rng.randint(max(c.founded, 2000), 2023),
            position=position,
            department=department.replace("_", " "),
            city=c.city,
            review=rng.choice(("exceeds expectations", "meets expectations", "strong")),
            email=world.plant("EMAIL_ADDRESS", _email(person, c.domain)),
            phone=world.plant("PHONE_NUMBER", _phone(rng)),
            address=world.plant("STREET_ADDRESS", _address(rng)),
            ssn=world.plant("US_SSN", _ssn(rng)),
            card=card,
        )
        doc = _add_doc(
            world,
            f"hr-{i:03d}",
            "hr_record",
            f"Employee record {employee_id}",
            text,
            department=department,
            region=c.region,
            acl=("hr",),
            extra={"company": c.name},
        )
        world.fact("employee", company=c, employee_id=employee_id, position=position, doc=doc)
