"""Request bodies of the /v1 routes, typed so the OpenAPI document says what the emulator accepts.

Unknown fields are kept (the SDK sends more than the emulator uses), camelCase and snake_case are
both accepted where the real SDK has sent both.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    baseModel: str = Field(min_length=1, max_length=512)
    loraRank: int = Field(default=0, ge=0, le=1024)
    learningRate: float | None = Field(default=None, ge=0)
    maxContextLength: int | None = Field(default=None, gt=0, le=10_000_000)
    forwardOnly: StrictBool | None = None


class CreateJobBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    trainingConfig: TrainingConfig
    displayName: str | None = Field(default=None, max_length=128)
    forwardOnly: StrictBool | None = None    # the SDK's TrainerJobConfig.forward_only (docs/wire.md A.3)


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    output_model: str = Field(validation_alias=AliasChoices("output_model", "outputModel"), max_length=512)
    trainer_job_id: str | None = Field(default=None, validation_alias=AliasChoices("trainer_job_id", "trainerJobId"),
                                       max_length=512)
    base_model: str = Field(validation_alias=AliasChoices("base_model", "baseModel"), max_length=512)
    async_promotion: bool = Field(default=False, validation_alias=AliasChoices("async_promotion", "asyncPromotion"))
    hot_load_deployment_id: str | None = Field(
        default=None, validation_alias=AliasChoices("hot_load_deployment_id", "hotLoadDeploymentId"), max_length=512)
