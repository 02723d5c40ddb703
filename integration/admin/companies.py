"""/api/environments/{id}/companies: companies (Segment groups) and their members."""

from __future__ import annotations

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration.admin import pagination, params
from integration.admin.common import environment, unit_of_work
from integration.admin.pagination import PAGE_PARAMS
from integration.admin.schemas import CompanyDetail, CompanyOut, CompanyPage, UserOut
from integration.errors import NotFound
from integration.openapi import Param, operation
from integration.store.models import Company, Membership, User
from integration.web import JSON

MEMBERS_SHOWN = 100


@operation(
    summary="List companies, newest first",
    response=CompanyPage,
    query=(Param("trait", "key:value; the trait's value as text equals value"), *PAGE_PARAMS),
)
async def list_companies(request: Request) -> Response:
    size, cursor = pagination.limit(request), pagination.after_id(request)
    traits = params.trait_filters(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        stmt = select(Company).where(Company.environment_id == env.id)
        for key, value in traits:
            stmt = stmt.where(Company.traits[key].astext == value)
        if cursor:
            stmt = stmt.where(Company.id < cursor)
        rows = list(await session.scalars(stmt.order_by(Company.id.desc()).limit(size + 1)))
    items = [
        CompanyOut.model_validate(c, from_attributes=True).model_dump(mode="json") for c in rows
    ]
    return JSON(pagination.page(items, size, [rows[size - 1].id] if len(rows) > size else None))


@operation(summary="A company with its traits and members", response=CompanyDetail)
async def read_company(request: Request) -> Response:
    group_id = request.path_params["group_id"]
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        # Postgres text cannot hold NUL, so no such company can exist.
        company = (
            None
            if "\x00" in group_id
            else await session.scalar(
                select(Company).where(
                    Company.environment_id == env.id, Company.group_id == group_id
                )
            )
        )
        if company is None:
            raise NotFound(f"no company {group_id!r} in this environment")
        members_of = (Membership.environment_id == env.id) & (Membership.group_id == group_id)
        count = await session.scalar(select(func.count()).select_from(Membership).where(members_of))
        members = list(
            await session.scalars(
                select(User)
                .join(
                    Membership,
                    (Membership.environment_id == User.environment_id)
                    & (Membership.user_id == User.user_id),
                )
                .where(members_of)
                .order_by(User.user_id)
                .limit(MEMBERS_SHOWN)
            )
        )
    detail = CompanyDetail(
        **CompanyOut.model_validate(company, from_attributes=True).model_dump(),
        member_count=count or 0,
        members=[UserOut.model_validate(u, from_attributes=True) for u in members],
    )
    return JSON(detail.model_dump(mode="json"))


routes = [
    Route("/environments/{env_id}/companies", list_companies, methods=["GET"]),
    Route("/environments/{env_id}/companies/{group_id}", read_company, methods=["GET"]),
]
