"""The ECR repository of the s3-sync image (s3-sync mode with the own-image option)."""

from __future__ import annotations

import json

from airflow_gitops.aws.converge import Converger, Step, canonical, error_code

# Tags are the digest of the image's sources and never move (immutable tags), so old images
# are only rollback targets: keep the newest 30, and drop untagged layers after a week.
LIFECYCLE_POLICY = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "Expire untagged images after 7 days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 7,
            },
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": "Keep the newest 30 images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30},
            "action": {"type": "expire"},
        },
    ]
}


class EcrRepository(Converger):
    kind = "ecr repository"

    def steps(self, ctx) -> tuple[bool, list[Step]]:
        from botocore.exceptions import ClientError

        ecr = ctx.client("ecr")
        name = self.name
        try:
            repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        except ClientError as exc:
            if error_code(exc) != "RepositoryNotFoundException":
                raise
            repo = None
        steps: list[Step] = []
        if repo is None:
            steps.append(
                (
                    "scan on push, immutable tags",
                    lambda: ecr.create_repository(
                        repositoryName=name,
                        imageTagMutability="IMMUTABLE",
                        imageScanningConfiguration={"scanOnPush": True},
                        encryptionConfiguration={"encryptionType": "AES256"},
                    ),
                )
            )
        else:
            if not repo.get("imageScanningConfiguration", {}).get("scanOnPush"):
                steps.append(
                    (
                        "scan on push",
                        lambda: ecr.put_image_scanning_configuration(
                            repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
                        ),
                    )
                )
            if repo.get("imageTagMutability") != "IMMUTABLE":
                steps.append(
                    (
                        "immutable tags",
                        lambda: ecr.put_image_tag_mutability(
                            repositoryName=name, imageTagMutability="IMMUTABLE"
                        ),
                    )
                )
        current = None
        if repo is not None:
            try:
                current = ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"]
            except ClientError as exc:
                if error_code(exc) != "LifecyclePolicyNotFoundException":
                    raise
        if current is None or canonical(json.loads(current)) != canonical(LIFECYCLE_POLICY):
            steps.append(
                (
                    "lifecycle policy",
                    lambda: ecr.put_lifecycle_policy(
                        repositoryName=name, lifecyclePolicyText=json.dumps(LIFECYCLE_POLICY)
                    ),
                )
            )
        return repo is not None, steps

    def removal(self, ctx) -> list[Step]:
        """Images are rebuilt from images/s3-sync, but a deploy may still run one: a repository
        with images is refused unless ``ctx.delete_data``."""
        from botocore.exceptions import ClientError

        from airflow_gitops.aws.errors import AwsError

        ecr = ctx.client("ecr")
        try:
            ecr.describe_repositories(repositoryNames=[self.name])
        except ClientError as exc:
            if error_code(exc) != "RepositoryNotFoundException":
                raise
            return []
        images = ecr.list_images(repositoryName=self.name)["imageIds"]
        if images and not ctx.delete_data:
            raise AwsError(
                f"{self.label}: holds {len(images)} images; run `make destroy "
                "DELETE_DATA=yes` to delete them with it"
            )
        return [
            (
                f"and its {len(images)} images" if images else "empty",
                lambda: ecr.delete_repository(repositoryName=self.name, force=bool(images)),
            )
        ]
